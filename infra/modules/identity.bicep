// The app's one identity: it reads its host storage, the deployment package and its Key Vault
// secrets, and publishes telemetry. User-assigned, so that role assignments can exist before the app.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
