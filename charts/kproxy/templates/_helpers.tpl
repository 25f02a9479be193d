{{/* Names, labels and image references shared by every template. */}}

{{- define "kproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name; kept at 52 characters so suffixes like -webhook-tls stay under 63. */}}
{{- define "kproxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kproxy.labels" -}}
helm.sh/chart: {{ include "kproxy.chart" . }}
{{ include "kproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kproxy
{{- end }}

{{- define "kproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "kproxy.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "kproxy.operatorImage" -}}
{{- include "kproxy.image" (dict "image" .Values.operator.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "kproxy.sidecarImage" -}}
{{- include "kproxy.image" (dict "image" .Values.sidecar.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/* One Service carries the webhook (443) and the admin port the ServiceMonitor scrapes. */}}
{{- define "kproxy.serviceName" -}}
{{- include "kproxy.fullname" . }}
{{- end }}

{{- define "kproxy.webhookConfigName" -}}
{{- printf "%s-injector" (include "kproxy.fullname" .) }}
{{- end }}

{{- define "kproxy.webhookCertSecret" -}}
{{- default (printf "%s-webhook-tls" (include "kproxy.fullname" .)) .Values.webhook.certificate.secretName }}
{{- end }}

{{- define "kproxy.leaseName" -}}
{{- default (printf "%s-leader" (include "kproxy.fullname" .)) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- define "kproxy.certManager" -}}
{{- if eq .Values.webhook.certificate.mode "cert-manager" }}true{{ end }}
{{- end }}

{{- define "kproxy.certificateName" -}}
{{- printf "%s-webhook" (include "kproxy.fullname" .) }}
{{- end }}

{{/* The namespaces the operator watches, comma-separated; empty means every namespace (cluster-wide mode).
operator.watchNamespace (one) and operator.watchNamespaces (a list) are merged. */}}
{{- define "kproxy.watchNamespaces" -}}
{{- $all := list }}
{{- with .Values.operator.watchNamespace }}{{ $all = append $all . }}{{ end }}
{{- range .Values.operator.watchNamespaces }}{{ $all = append $all . }}{{ end }}
{{- $all | uniq | join "," }}
{{- end }}

{{/* What the controller and the webhook need where policies live: granted by one ClusterRole in cluster-wide
mode, by a Role in each watched namespace otherwise. No Secret is readable unless operator.checkSecrets is set. */}}
{{- define "kproxy.policyRules" -}}
- apiGroups: ["kproxy.dev"]
  resources: ["kafkaproxypolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kproxy.dev"]
  resources: ["kafkaproxypolicies/status"]
  verbs: ["get", "patch"]
# The rendered sidecar config of each policy (owned by the policy, applied server-side, drift repaired). The
# chart's ValidatingAdmissionPolicy refuses the operator any write to a ConfigMap it does not label as its own.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Read-only, metadata watched: which Secrets each injected pod mounts, for the PodsNeedRestart condition.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.sidecar.configWatch }}
# sidecar.configWatch: sidecars watch their policy's ConfigMap through the API. In each namespace with policies
# the operator keeps one Role (get/watch on exactly those ConfigMaps) and a RoleBinding to the namespace's
# ServiceAccounts. RBAC lets it grant only what it holds (the ConfigMap rules above); create cannot be limited by
# name, reading and changing them can.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  resourceNames: ["kproxy-sidecar-config"]
  verbs: ["get", "patch", "update"]
{{- end }}
{{- if .Values.operator.checkSecrets }}
# operator.checkSecrets: RBAC cannot grant Secret metadata without Secret contents.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
