// Azure Managed Redis for RATE_LIMIT_STORAGE, so that every instance counts against the same limits.
// Microsoft Entra ID only: access keys are off, and the app's user-assigned identity is the one user,
// through an access policy assignment. The app signs in with redis-entraid, which fetches the
// identity's token and renews it in the background (tokens/redisauth.py): no key is read or stored.
param name string
param location string
param tags object
param skuName string
// The object (principal) id of the app's identity: Redis knows an Entra user by it.
param principalId string

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    // Flex Consumption without a virtual network has no private path; the database takes TLS only
    // and an Entra ID token.
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    // One endpoint that routes every key: the app's client is not cluster-aware (OSSCluster would
    // answer MOVED for keys on other shards).
    clusteringPolicy: 'EnterpriseCluster'
    // Every rate-limit counter carries a TTL; under memory pressure the oldest counters go rather than
    // writes failing.
    evictionPolicy: 'VolatileLRU'
    // Entra ID only: there is no key to leak, rotate or keep in Key Vault.
    accessKeysAuthentication: 'Disabled'
  }
}

// The built-in "default" policy (the only one Azure Managed Redis offers) for the app's identity. The
// name allows letters and digits only, up to 60; one per identity, so a new identity gets its own.
resource appAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: 'app${uniqueString(principalId)}'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: principalId
    }
  }
}

output hostName string = cluster.properties.hostName
