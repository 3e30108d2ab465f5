{{/* Names and labels shared by every template. */}}

{{- define "coai-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name: the release name when it already contains the chart name (a release named
coai-operator gives coai-operator, the ServiceAccount the e2e suite's token user stands for).
*/}}
{{- define "coai-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "coai-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coai-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "coai-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "coai-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: coai
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "coai-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "coai-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "coai-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules, from files/rbac-rules.yaml (the one source for the chart and manifests/):
  coai-operator.rules.operator   what the operator reads and writes (ClusterRole or Role per namespace),
                                 + the ownerReferences rules when rbac.ownerReferencesPermissionEnforcement
  coai-operator.rules.discovery  read-only cluster-scoped rules: kopf's observers (rbac.discovery) + StorageClasses
*/}}
{{- define "coai-operator.rules.operator" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml -}}
{{- $out := $rules.operator -}}
{{- if .Values.rbac.ownerReferencesPermissionEnforcement -}}
{{- $out = concat $out $rules.ownerReferences -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "coai-operator.rules.discovery" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml -}}
{{- $out := list -}}
{{- if .Values.rbac.discovery -}}
{{- $out = concat $out $rules.discovery.crds -}}
{{- if .Values.watchNamespaces -}}
{{- $out = concat $out $rules.discovery.namespaces -}}
{{- end -}}
{{- $out = concat $out $rules.discovery.storageClasses -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* `coai-operator run` arguments: the watched namespaces, kopf's liveness endpoint, metrics, the log level. */}}
{{- define "coai-operator.args" -}}
- run
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.health.port }}/healthz
- --metrics=0.0.0.0:{{ .Values.metrics.port }}
{{- if eq .Values.logLevel "debug" }}
- --verbose
{{- end }}
{{- end -}}
