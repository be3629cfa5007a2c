// Azure Managed Redis for RATE_LIMIT_STORAGE, so that every instance counts against the same limits.
// The app reaches Redis through the `limits` library, which takes a redis URL (redis-py underneath):
// it has no way to fetch and refresh Entra tokens, so the access key goes into a rediss:// URL kept in
// Key Vault, and the app gets a Key Vault reference to it like the Direct Line secret.
param name string
param location string
param tags object
param skuName string
param keyVaultName string
param connectionSecretName string

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
    // and an access key.
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
    accessKeysAuthentication: 'Enabled'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The key is URL-encoded: access keys may contain characters that mean something in a URL.
resource connection 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: connectionSecretName
  properties: {
    // checkov:skip=CKV_AZURE_41:Rewritten from the cache's current key on every provision; regenerating the key is followed by a provision (docs/deploy.md).
    value: 'rediss://:${uriComponent(database.listKeys().primaryKey)}@${cluster.properties.hostName}:10000'
    contentType: 'text/plain'
  }
}

output hostName string = cluster.properties.hostName
