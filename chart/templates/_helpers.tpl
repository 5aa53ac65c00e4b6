{{/* Chart name, truncated to a DNS label. */}}
{{- define "llmsafespace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>, or <release>-<name> when the release name does not contain the name. */}}
{{- define "llmsafespace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the hook server's Deployment, Service, ServiceAccount, PDB, HPA, NetworkPolicy. */}}
{{- define "llmsafespace.hooksName" -}}
{{- printf "%s-hooks" (include "llmsafespace.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "llmsafespace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "llmsafespace.labels" -}}
helm.sh/chart: {{ include "llmsafespace.chart" . }}
app.kubernetes.io/name: {{ include "llmsafespace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: llmsafespace
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the hook server pods (never shared with sandbox pods, which use app/component). */}}
{{- define "llmsafespace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmsafespace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hook-server
{{- end }}

{{- define "llmsafespace.hooksLabels" -}}
{{ include "llmsafespace.labels" . }}
app.kubernetes.io/component: hook-server
{{- end }}

{{- define "llmsafespace.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The host:port Metacontroller calls: the release's Service. */}}
{{- define "llmsafespace.hookHost" -}}
{{- printf "%s.%s.svc:%d" (include "llmsafespace.hooksName" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* The URL webhook paths are appended to: an external hook server's, or the release's Service. */}}
{{- define "llmsafespace.hookBaseURL" -}}
{{- if .Values.externalHookServer.url -}}
{{ .Values.externalHookServer.url }}
{{- else -}}
http://{{ include "llmsafespace.hookHost" . }}
{{- end -}}
{{- end }}

{{/* Does the chart deploy the hook server? Not when an external one is named. */}}
{{- define "llmsafespace.deployServer" -}}
{{- if not .Values.externalHookServer.url }}true{{ end }}
{{- end }}

{{/* Is metrics.port a separate port? */}}
{{- define "llmsafespace.separateMetricsPort" -}}
{{- if ne (int .Values.metrics.port) (int .Values.server.port) }}true{{ end }}
{{- end }}

{{/*
Bearer token of the hook server, computed once per render and memoised in .Values.hookAuth
(templates render in one pass over one values tree, so every template sees the same token):
the given token, else the one in the existing Secret (kept across upgrades), else 48 random
characters. Not used with hookAuth.existingSecret.
*/}}
{{- define "llmsafespace.hookToken" -}}
{{- $auth := .Values.hookAuth -}}
{{- if not (hasKey $auth "__resolvedToken") -}}
{{- $token := $auth.token -}}
{{- if not $token -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "llmsafespace.tokenSecretName" .) -}}
{{- range $key, $value := (($existing | default dict).data | default dict) -}}
{{- if hasPrefix "token-" $key }}{{ $token = b64dec $value }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $auth "__resolvedToken" ($token | default (randAlphaNum 48)) -}}
{{- end -}}
{{- get $auth "__resolvedToken" -}}
{{- end }}

{{- define "llmsafespace.tokenSecretName" -}}
{{- if .Values.hookAuth.existingSecret -}}
{{ .Values.hookAuth.existingSecret }}
{{- else -}}
{{ include "llmsafespace.hooksName" . }}-token
{{- end -}}
{{- end }}

{{/*
Key of the token in the Secret. For a chart-managed Secret it carries a short hash of the token,
so a new token changes the controllers' spec (Metacontroller re-reads webhook Secrets only when a
controller's spec changes) and the pod template (the pods roll and read the new file).
*/}}
{{- define "llmsafespace.tokenSecretKey" -}}
{{- if .Values.hookAuth.existingSecret -}}
{{ .Values.hookAuth.existingSecretKey }}
{{- else -}}
token-{{ include "llmsafespace.hookToken" . | sha256sum | trunc 12 }}
{{- end -}}
{{- end }}

{{- define "llmsafespace.tokenMountDir" -}}/var/run/secrets/llmsafespace/hook-token{{- end }}

{{/* Namespace Metacontroller runs in (empty value = the release namespace). */}}
{{- define "llmsafespace.metacontrollerNamespace" -}}
{{- .Values.networkPolicy.metacontroller.namespace | default .Release.Namespace }}
{{- end }}

{{/* A map as "k1=v1,k2=v2", keys sorted (the format of LLMSS_DNS_POD_LABELS). */}}
{{- define "llmsafespace.keyValues" -}}
{{- $pairs := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $ $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{- define "llmsafespace.metacontrollerPodLabels" -}}
{{- toYaml (.Values.networkPolicy.metacontroller.podLabels | default (dict "app.kubernetes.io/name" "metacontroller-helm")) }}
{{- end }}

{{- define "llmsafespace.prometheusPodLabels" -}}
{{- toYaml (.Values.networkPolicy.prometheus.podLabels | default (dict "app.kubernetes.io/name" "prometheus")) }}
{{- end }}

{{- define "llmsafespace.dnsPodLabels" -}}
{{- include "llmsafespace.keyValues" (.Values.config.dnsPodLabels | default (dict "k8s-app" "kube-dns")) }}
{{- end }}

{{/*
What the egress backend adds to the controllers, by controller name: metacontroller/egress/<backend>.yaml
(read through the same symlink as the controllers); empty for networkpolicy, which has no file.
*/}}
{{- define "llmsafespace.egressAdditions" -}}
{{- $file := printf "files/metacontroller/egress/%s.yaml" .Values.egress.backend }}
{{- $raw := .Files.Get $file }}
{{- if and (not $raw) (ne .Values.egress.backend "networkpolicy") }}
{{- fail (printf "egress.backend %s: %s is missing" .Values.egress.backend $file) }}
{{- end }}
{{- $raw }}
{{- end }}

{{/* Name of the gateway's Deployment, Service, ServiceAccount, PDB, HPA and ClusterRole(Binding). */}}
{{- define "llmsafespace.gatewayName" -}}
{{- printf "%s-gateway" (include "llmsafespace.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Selector labels of the gateway pods. */}}
{{- define "llmsafespace.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "llmsafespace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "llmsafespace.gatewayLabels" -}}
{{ include "llmsafespace.labels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* What the sandboxes' NetworkPolicies admit (hooks/constants.py: LABEL_APP=APP_NAME,
LABEL_COMPONENT=COMPONENT_API, in LLMSS_API_NAMESPACE): only on the gateway's pods. */}}
{{- define "llmsafespace.apiComponentLabels" -}}
app: llmsafespace
component: api
{{- end }}

{{- define "llmsafespace.gatewayImage" -}}
{{- $image := .Values.gateway.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "llmsafespace.gatewayKeyMountDir" -}}/var/run/secrets/llmsafespace/gateway-signing-key{{- end }}
