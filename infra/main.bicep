// Entry point for `azd up` (and for `az deployment sub create`): one resource group holding the
// Direct Line token service on a Flex Consumption plan, its identity, storage, Key Vault, monitoring,
// an alert, and optionally Azure Managed Redis for rate limits shared across instances.
//
// Every app setting of the SPEC is either set below from a parameter, set to a Key Vault reference,
// or deliberately left unset so that the app's own default applies; docs/deploy.md has the table.
// These files stick to classic Bicep syntax (no user-defined types, functions, imports, spreads,
// lambdas or nullable types, no comments inside function calls and at most four comment lines in a
// row at a resource's top level) so that checkov's parser, pycep, reads every line; tests/test_infra.py
// fails when it cannot.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Where and what
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment. Names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Azure region for every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@secure()
@minLength(1)
@description('The bot\'s Direct Line secret. Written to Key Vault only; the app reads it through a Key Vault reference.')
param directLineSecret string

@secure()
@description('DIRECT_LINE_SECRET_SECONDARY: optional, the Direct Line site\'s other secret key, tried only when Direct Line refuses the first, so either key can be regenerated without downtime (docs/deploy.md, Rotating the secret). Written to Key Vault only; empty leaves it unset.')
param directLineSecretSecondary string = ''

// ---------------------------------------------------------------------------------------------
// Flex Consumption scale
// ---------------------------------------------------------------------------------------------

@minValue(0)
@maxValue(20)
@description('Always-ready instances for the HTTP functions. 0 scales to zero (the warm-up timer softens cold starts); each instance removes cold starts for its share of traffic and is billed while idle.')
param alwaysReadyInstances int = 0

// What Flex Consumption accepts: "The lowest maximum scale is currently 1. The highest currently
// supported value is 1000." (Considerations, Scale, in
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations; earlier
// versions of that page gave 40 as the lowest.)
@minValue(1)
@maxValue(1000)
@description('Upper bound on instances the app may scale out to, from 1 to 1000 (what Flex Consumption accepts). Also bounds the bill and what Direct Line sees from us.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB. The service is I/O bound; 2048 is the platform default.')
param instanceMemoryMB int = 2048

// Flex Consumption's default for a Python app is 1 ("For Python apps, the default HTTP trigger concurrency
// for all instances sizes is 1", https://learn.microsoft.com/azure/azure-functions/functions-concurrency#http-trigger-concurrency).
// At most the worker's threads (PYTHON_THREADPOOL_THREAD_COUNT, modules/functionapp.bicep): more would
// only queue inside the worker. The curve behind 32: benchmarks/RESULTS.md section 5, docs/deploy.md.
@minValue(1)
@maxValue(32)
@description('HTTP invocations one instance takes at once before Flex Consumption adds another (perInstanceConcurrency), 1 to 32. 32 suits a 2048 or 4096 MB instance; use 8 on 512 MB (a quarter of a CPU). Lower means more instances, more cold starts and more billed instance time for the same traffic.')
param httpPerInstanceConcurrency int = 32

@allowed([
  '3.11'
  '3.12'
  '3.13'
])
@description('Python version the app runs on. The whole test suite runs under 3.11, the default; all but its browser and slow tests under 3.12 and 3.13 too, and requirements.txt resolves on each.')
param pythonVersion string = '3.11'

// ---------------------------------------------------------------------------------------------
// App settings of the SPEC (defaults equal the SPEC's own defaults)
// ---------------------------------------------------------------------------------------------
// The app treats an empty setting as unset. azd passes an empty string for a variable of
// main.parameters.json that is not set and has no default there, so an empty value here means the
// SPEC's default too.

@description('DIRECT_LINE_ENDPOINT: Direct Line base URL (regional hosts such as europe.directline.botframework.com are accepted by the app).')
param directLineEndpoint string = 'https://directline.botframework.com/v3/directline'

// No default, and a bare azd variable in main.parameters.json: a first `azd up` asks for it, so that
// the page that embeds Web Chat is not refused (403 origin_not_allowed) by a service that says ok.
@minLength(1)
@description('ALLOWED_ORIGINS: the origins of the pages that embed Web Chat, comma-separated, such as https://www.contoso.com,https://*.contoso.com,http://localhost:3000 (scheme, host and port only; *. allows one level of subdomains). none: no browser page calls this service, only servers.')
param allowedOrigins string

@allowed([
  'anonymous'
  'jwt'
  'easyauth'
])
@description('AUTH_MODE: anonymous, jwt (the site\'s identity provider) or easyauth (App Service Authentication, configured separately).')
param authMode string = 'anonymous'

@description('AUTH_JWT_ISSUER: jwt mode only. Empty leaves the setting unset.')
param authJwtIssuer string = ''

@description('AUTH_JWT_AUDIENCE: jwt mode only. Empty leaves the setting unset.')
param authJwtAudience string = ''

@description('AUTH_JWKS_URL: jwt mode only. Empty leaves it unset, so the app reads the issuer\'s OpenID configuration.')
param authJwksUrl string = ''

@description('AUTH_JWT_ALGORITHMS: jwt mode only; the allowed algorithms, comma-separated.')
param authJwtAlgorithms string = 'RS256'

@secure()
@description('AUTH_JWT_SECRET: jwt mode with HS256 only. When given it goes to Key Vault and the app gets a reference; empty leaves it unset.')
param authJwtSecret string = ''

@description('AUTH_USER_CLAIM: jwt mode only; the claim that identifies the user.')
param authUserClaim string = 'sub'

@description('AUTH_NAME_CLAIM: jwt mode only; the claim with the display name.')
param authNameClaim string = 'name'

@secure()
@description('USER_HANDLE_KEY: recommended. When given it goes to Key Vault and the app gets a reference, so rotating the Direct Line secret no longer retires user handles. Empty leaves it unset (derived from the secret).')
param userHandleKey string = ''

@minValue(60)
@maxValue(31536000)
@description('USER_HANDLE_TTL: seconds a user handle stays valid.')
param userHandleTtl int = 2592000

@description('RATE_LIMIT: per-caller limits in `limits` notation, several joined with ;.')
param rateLimit string = '10/minute'

@description('GLOBAL_RATE_LIMIT: all callers together.')
param globalRateLimit string = '600/minute'

@minValue(0)
@maxValue(10)
@description('TRUSTED_PROXY_HOPS: X-Forwarded-For entries added by trusted front ends. App Service\'s own front end adds one.')
param trustedProxyHops int = 1

@description('UPSTREAM_TIMEOUT: seconds for one Direct Line call (a number above 0, at most 60).')
param upstreamTimeout string = '5'

@description('WARMUP_SCHEDULE: six-field NCRONTAB schedule of the warm-up timer.')
param warmupSchedule string = '0 */5 * * * *'

@allowed([
  'full'
  'truncated'
  'none'
])
@description('AUDIT_CLIENT_IP: how much of the client address the audit record keeps.')
param auditClientIp string = 'truncated'

@minValue(0)
@maxValue(1209600)
@description('CONVERSATION_TTL: seconds a conversationTicket stays valid; 0 turns resuming off; at most 1209600 (14 days).')
param conversationTtl int = 86400

@description('DIRECT_LINE_ENHANCED_AUTH: true when the bot\'s Direct Line site has Enhanced authentication options on (Copilot Studio with secured access, for one): conversations cannot be resumed there, so no conversationTicket is issued.')
param directLineEnhancedAuth bool = false

@minValue(32)
@maxValue(64)
@description('RATE_LIMIT_IPV6_PREFIX: anonymous IPv6 callers are counted by this network (64, or 56 or 48 for stricter sites).')
param rateLimitIpv6Prefix int = 64

// ---------------------------------------------------------------------------------------------
// Shared rate limits
// ---------------------------------------------------------------------------------------------

@description('Create Azure Managed Redis and point RATE_LIMIT_STORAGE at it, so limits hold across instances. The app signs in with its managed identity; the cache takes no access key. Billed per hour while it exists.')
param enableManagedRedis bool = false

@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
])
@description('Azure Managed Redis size. Counters for rate limits are tiny; the smallest size is plenty.')
param managedRedisSku string = 'Balanced_B0'

// ---------------------------------------------------------------------------------------------
// Speech (Web Chat's microphone)
// ---------------------------------------------------------------------------------------------

@description('Create an Azure AI Speech resource for Web Chat\'s microphone (POST /api/speech/token), reached with the app\'s managed identity only (no key): SPEECH_RESOURCE_ID and SPEECH_REGION are set from it.')
param enableSpeech bool = false

@allowed([
  'F0'
  'S0'
])
@description('Speech resource tier: F0 is free (limited hours, one per subscription), S0 pay as you go.')
param speechSku string = 'S0'

@secure()
@description('SPEECH_KEY: only for a Speech resource of your own that takes keys, when enableSpeech is false (the template\'s own takes none). Written to Key Vault only; the app reads it through a Key Vault reference.')
param speechKey string = ''

@description('SPEECH_REGION of that resource, with speechKey (such as westeurope).')
param speechKeyRegion string = ''

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

@description('E-mail address for alerts. Empty creates the alert rule without an action group (it still shows in the portal).')
param alertEmail string = ''

@minValue(1)
@description('Failed (5xx) token, refresh and resume requests within 15 minutes that fire the alert.')
param failedRequestsAlertThreshold int = 5

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps the audit records and other telemetry.')
param logRetentionDays int = 30

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault (and its secrets) stays recoverable. Purge protection means its name stays taken that long.')
param keyVaultSoftDeleteRetentionDays int = 90

@description('Object id of a person or group allowed to write secrets (rotation). Empty grants no one; see docs/deploy.md.')
param secretsOfficerPrincipalId string = ''

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'
var keyVaultName = 'kv-${resourceToken}'
var deploymentContainerName = 'app-package'

// Secret names in Key Vault; the app settings below refer to them by name, without a version, so that
// a new version is picked up (see docs/deploy.md, Rotating the secret).
var directLineSecretName = 'direct-line-secret'
var directLineSecretSecondaryName = 'direct-line-secret-secondary'
var userHandleKeySecretName = 'user-handle-key'
var authJwtSecretName = 'auth-jwt-secret'
var speechKeySecretName = 'speech-key'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionDays
    directLineSecretName: directLineSecretName
    directLineSecret: directLineSecret
    directLineSecretSecondaryName: directLineSecretSecondaryName
    directLineSecretSecondary: directLineSecretSecondary
    userHandleKeySecretName: userHandleKeySecretName
    userHandleKey: userHandleKey
    authJwtSecretName: authJwtSecretName
    authJwtSecret: authJwtSecret
    speechKeySecretName: speechKeySecretName
    speechKey: enableSpeech ? '' : speechKey
  }
}

module redis 'modules/redis.bicep' = if (enableManagedRedis) {
  name: 'redis'
  scope: rg
  params: {
    name: 'redis-${resourceToken}'
    location: location
    tags: tags
    skuName: managedRedisSku
    principalId: identity.outputs.principalId
  }
}

module speech 'modules/speech.bicep' = if (enableSpeech) {
  name: 'speech'
  scope: rg
  params: {
    name: 'speech-${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    skuName: speechSku
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    secretsOfficerPrincipalId: secretsOfficerPrincipalId
  }
}

// The SPEC's settings. Secrets are Key Vault references resolved by the app's user-assigned identity
// (keyVaultReferenceIdentity); the plain values never reach the app's configuration.
var specSettings = {
  DIRECT_LINE_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${directLineSecretName})'
  DIRECT_LINE_ENDPOINT: directLineEndpoint
  ALLOWED_ORIGINS: allowedOrigins
  AUTH_MODE: authMode
  AUTH_JWT_ALGORITHMS: authJwtAlgorithms
  AUTH_USER_CLAIM: authUserClaim
  AUTH_NAME_CLAIM: authNameClaim
  USER_HANDLE_TTL: string(userHandleTtl)
  RATE_LIMIT: rateLimit
  GLOBAL_RATE_LIMIT: globalRateLimit
  TRUSTED_PROXY_HOPS: string(trustedProxyHops)
  UPSTREAM_TIMEOUT: upstreamTimeout
  WARMUP_SCHEDULE: warmupSchedule
  AUDIT_CLIENT_IP: auditClientIp
  CONVERSATION_TTL: string(conversationTtl)
  DIRECT_LINE_ENHANCED_AUTH: string(directLineEnhancedAuth)
  RATE_LIMIT_IPV6_PREFIX: string(rateLimitIpv6Prefix)
  // WARMUP_URL stays unset: the app derives https://$WEBSITE_HOSTNAME/api/health, which is right.
}

// Settings that exist only when their parameter was given, so that "empty" means "unset" to the app.
var jwtSettings = union(
  empty(authJwtIssuer) ? {} : {
    AUTH_JWT_ISSUER: authJwtIssuer
  },
  empty(authJwtAudience) ? {} : {
    AUTH_JWT_AUDIENCE: authJwtAudience
  },
  empty(authJwksUrl) ? {} : {
    AUTH_JWKS_URL: authJwksUrl
  }
)
var optionalSecretSettings = union(
  empty(directLineSecretSecondary) ? {} : {
    DIRECT_LINE_SECRET_SECONDARY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${directLineSecretSecondaryName})'
  },
  empty(userHandleKey) ? {} : {
    USER_HANDLE_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${userHandleKeySecretName})'
  },
  empty(authJwtSecret) ? {} : {
    AUTH_JWT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${authJwtSecretName})'
  }
)
// With Managed Redis, RATE_LIMIT_STORAGE names the database and holds no secret: the app signs in
// with its managed identity (an access policy in modules/redis.bicep, tokens/redisauth.py), so it
// needs no Key Vault either. Without it the setting stays unset: memory:// counts per instance.
// With Speech, the app mints speech tokens with its managed identity (tokens/speech.py): the resource's
// ID and region, no key. SPEECH_KEY and SPEECH_ENDPOINT stay unset (they are for local runs).
var speechSettings = enableSpeech ? {
  SPEECH_RESOURCE_ID: speech.outputs.id
  SPEECH_REGION: location
} : (empty(speechKey) ? {} : {
  SPEECH_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${speechKeySecretName})'
  SPEECH_REGION: speechKeyRegion
})
var redisSettings = enableManagedRedis ? {
  RATE_LIMIT_STORAGE: 'rediss://${redis.outputs.hostName}:10000'
} : {}

module api 'modules/functionapp.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainerName}'
    appInsightsConnectionString: monitoring.outputs.connectionString
    appSettings: union(specSettings, jwtSettings, optionalSecretSettings, redisSettings, speechSettings)
    alwaysReadyInstances: alwaysReadyInstances
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    pythonVersion: pythonVersion
  }
  // The app resolves its Key Vault references and reaches its storage as soon as it starts: let the
  // role assignments, the secrets and the cache's access policy exist first.
  dependsOn: [
    roles
    redis
    speech
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    alertEmail: alertEmail
    failedRequestsThreshold: failedRequestsAlertThreshold
  }
}

// azd reads these into the environment (.azure/<env>/.env); none of them is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
