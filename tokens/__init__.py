"""Direct Line token service: the core, free of azure.functions."""
