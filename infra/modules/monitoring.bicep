// Log Analytics and workspace-based Application Insights. The audit records arrive as `traces`
// (message = the record's JSON); docs/deploy.md has the queries.
param workspaceName string
param appInsightsName string
param location string
param tags object
param retentionInDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // Entra ID only: telemetry is accepted from the app's identity (Monitoring Metrics Publisher),
    // not from whoever holds the connection string.
    DisableLocalAuth: true
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// The connection string only says where to send telemetry; with local auth off it grants nothing.
output connectionString string = appInsights.properties.ConnectionString
