// The vault for the app's secrets. RBAC only (no access policies); the app's identity gets Key Vault
// Secrets User on it in roles.bicep. Secrets come from @secure() parameters and are never output.
param name string
param location string
param tags object
param softDeleteRetentionInDays int

param directLineSecretName string
@secure()
param directLineSecret string

param directLineSecretSecondaryName string
@secure()
param directLineSecretSecondary string

param userHandleKeySecretName string
@secure()
param userHandleKey string

param authJwtSecretName string
@secure()
param authJwtSecret string

param speechKeySecretName string
@secure()
param speechKey string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109:Key Vault references are resolved from the app's public outbound addresses, which Flex Consumption does not fix without a virtual network; access is RBAC-only, see docs/deploy.md.
    // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: the vault keeps its public endpoint, guarded by RBAC.
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Direct Line secrets do not expire on their own; rotation is by hand (docs/deploy.md), so no expiry
// date is set: an expired secret would take the service down on a date nobody chose.
resource directLine 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: directLineSecretName
  properties: {
    // checkov:skip=CKV_AZURE_41:The Direct Line secret has no expiry of its own; rotation is a documented manual step (docs/deploy.md).
    value: directLineSecret
    contentType: 'text/plain'
  }
}

resource directLineSecondary 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(directLineSecretSecondary)) {
  parent: vault
  name: directLineSecretSecondaryName
  properties: {
    // checkov:skip=CKV_AZURE_41:The site's other Direct Line key: no expiry of its own, rotated by hand with the first (docs/deploy.md).
    // checkov:skip=CKV_AZURE_114:contentType is set just below; checkov does not read the properties of a resource declared with if().
    value: directLineSecretSecondary
    contentType: 'text/plain'
  }
}

resource handleKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(userHandleKey)) {
  parent: vault
  name: userHandleKeySecretName
  properties: {
    // checkov:skip=CKV_AZURE_41:A signing key rotated by hand; an expiry would silently retire every user handle on that date.
    // checkov:skip=CKV_AZURE_114:contentType is set just below; checkov does not read the properties of a resource declared with if().
    value: userHandleKey
    contentType: 'text/plain'
  }
}

resource jwtSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(authJwtSecret)) {
  parent: vault
  name: authJwtSecretName
  properties: {
    // checkov:skip=CKV_AZURE_41:Shared with the site's identity provider and rotated with it, by hand.
    // checkov:skip=CKV_AZURE_114:contentType is set just below; checkov does not read the properties of a resource declared with if().
    value: authJwtSecret
    contentType: 'text/plain'
  }
}

resource speechKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(speechKey)) {
  parent: vault
  name: speechKeySecretName
  properties: {
    // checkov:skip=CKV_AZURE_41:A Speech key of a resource outside the template, rotated with that resource, by hand.
    // checkov:skip=CKV_AZURE_114:contentType is set just below; checkov does not read the properties of a resource declared with if().
    value: speechKey
    contentType: 'text/plain'
  }
}

output name string = vault.name
