// The Flex Consumption plan and the function app: Linux, Python (3.11 by default), HTTPS only, TLS 1.2,
// FTP and SCM basic authentication off, one user-assigned identity for storage, Key Vault, telemetry
// and Redis.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerUrl string
param appInsightsConnectionString string
param appSettings object
param alwaysReadyInstances int
param maximumInstanceCount int
param instanceMemoryMB int
param httpPerInstanceConcurrency int
param pythonVersion string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    // checkov:skip=CKV_AZURE_225:Zone redundancy is a Flex Consumption option with its own cost; left off by default for a service whose callers simply retry.
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy to by this tag; `api` is the service's name in azure.yaml.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_17:Browsers calling the token route cannot present client certificates.
    // checkov:skip=CKV_AZURE_78:ftpsState is deprecated on Flex Consumption; FTP is turned off by the ftp basicPublishingCredentialsPolicies below.
    // checkov:skip=CKV_AZURE_212:Flex Consumption has no fixed instance count to raise; the platform adds instances as load needs them (alwaysReadyInstances keeps some warm).
    // checkov:skip=CKV_AZURE_213:App Service health check evicts instances from a fixed pool; Flex Consumption manages its own instances. /api/health is called by the warm-up timer and after each deploy.
    // checkov:skip=CKV_AZURE_222:The token route is a public API for browsers by design; ALLOWED_ORIGINS, AUTH_MODE and rate limits guard it.
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references are resolved with this identity (the app has no system-assigned one).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      // No platform CORS: the app answers preflights itself from ALLOWED_ORIGINS, and platform CORS
      // would answer them first.
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // `http` is the group all HTTP functions share on Flex Consumption.
        alwaysReady: (alwaysReadyInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstances
          }
        ] : []
        // Set, because Python's default is 1: every concurrent caller another instance (docs/deploy.md).
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Host settings that connect the app to its storage and telemetry with its identity, then the SPEC's
// settings. Nothing here touches logging levels: host.json keeps Function at Information and traces
// out of sampling, so the audit records reach Application Insights whole.
var platformSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The Azure SDKs' name for the user-assigned identity to sign in with: the app's Redis sign-in
  // (tokens/redisauth.py) takes the identity's tokens for this client id.
  AZURE_CLIENT_ID: identityClientId
  // The Python worker runs sync functions on this many threads; unset it would be min(32, CPUs + 4),
  // about 5 on one CPU, far below perInstanceConcurrency. The app's Direct Line pool keeps as many
  // connections (tokens/settings.py DEFAULT_CONCURRENCY; tests/test_infra.py holds them equal).
  PYTHON_THREADPOOL_THREAD_COUNT: '32'
}

// checkov reads this appsettings resource as if it were the site's web configuration; the checks
// skipped in it concern properties that do not belong to app settings.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13:The app authenticates callers itself (AUTH_MODE); App Service Authentication is the AUTH_MODE easyauth option (docs/deploy.md).
  // checkov:skip=CKV_AZURE_63:HTTP logs are App Service file-system logs; requests and traces go to Application Insights.
  // checkov:skip=CKV_AZURE_65:Detailed error pages are an App Service file-system log; the app answers errors in its own JSON shape.
  // checkov:skip=CKV_AZURE_66:Failed request tracing is an App Service file-system log; failures go to Application Insights and fire the alert.
  parent: site
  // checkov:skip=CKV_AZURE_80:Not a .NET app: the runtime is Python (functionAppConfig.runtime, parameter pythonVersion).
  // checkov:skip=CKV_AZURE_88:The app keeps no files, and Flex Consumption does not mount Azure Files.
  // checkov:skip=CKV_AZURE_222:Public network access is a property of the site; see the site's reason.
  name: 'appsettings'
  properties: union(appSettings, platformSettings)
}

// Publishing with a user name and password (FTP, or Kudu/SCM basic auth) is off: azd and Core Tools
// deploy to Flex Consumption with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
