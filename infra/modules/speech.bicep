// Azure AI Speech for Web Chat's microphone (POST /api/speech/token), reached with the app's managed
// identity only: local (key) authentication is off, so there is no key to leak, rotate or keep in Key
// Vault. Microsoft Entra authentication needs a custom subdomain (which cannot be removed once set),
// and the app's identity gets Cognitive Services Speech User on this one resource, nothing wider.
param name string
param location string
param tags object
// The object (principal) id of the app's identity.
param principalId string
@allowed([
  'F0'
  'S0'
])
param skuName string

// Built-in role: Cognitive Services Speech User (speech APIs only, no management, no keys).
var speechUser = 'f2dc8367-1007-4938-bd23-fe263f013447'

resource speech 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'SpeechServices'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_238:The account calls nothing on its own; only the app's identity calls it, through its role below.
    customSubDomainName: name
    // checkov:skip=CKV_AZURE_134:The browser calls the Speech service directly (Web Chat's microphone); it needs a public endpoint.
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource appSpeechUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(speech.id, principalId, speechUser)
  scope: speech
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', speechUser)
  }
}

output id string = speech.id
output endpoint string = speech.properties.endpoint
