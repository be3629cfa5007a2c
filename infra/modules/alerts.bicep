// An alert on the audit trail: token, refresh and resume requests that ended in a 5xx (outcome
// "failed": Direct Line down or refusing the secret, timeouts, misconfiguration). Denials (4xx) are
// callers' mistakes or abuse, visible in the queries of docs/deploy.md, and do not page anyone.
param namePrefix string
param location string
param tags object
param appInsightsId string
param alertEmail string
param failedRequestsThreshold int

var actionGroupName = 'ag-${namePrefix}'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'dltokens'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Audit records are traces whose message is one line of JSON (SPEC, Audit record).
var failedQuery = '''
traces
| where message has "directline"
| extend audit = parse_json(message)
| where tostring(audit.event) startswith "directline." and tostring(audit.outcome) == "failed"
'''

resource failedRequests 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-failed-tokens-${namePrefix}'
  location: location
  tags: tags
  properties: {
    displayName: 'Direct Line token service: failed requests'
    description: 'Token, refresh or resume requests answered with a 5xx (audit outcome "failed"). See docs/deploy.md for the queries.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: failedQuery
          timeAggregation: 'Count'
          operator: 'GreaterThanOrEqual'
          threshold: failedRequestsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        resourceId('Microsoft.Insights/actionGroups', actionGroupName)
      ]
    }
  }
  dependsOn: [
    actionGroup
  ]
}
