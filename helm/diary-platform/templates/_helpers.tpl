{{/*
Names and labels shared by every template. The object names the rest of the deployment relies on
(service account, Secret, ConfigMap, collector) come from values, not from the release name, because
values-dagster.yaml and the platform's environment refer to them by those names.
*/}}

{{- define "diary.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "diary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels for selectors: stable across upgrades. Call with (dict "ctx" $ "component" "name"). */}}
{{- define "diary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "diary.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. Call with (dict "ctx" $ "component" "name"). */}}
{{- define "diary.labels" -}}
{{ include "diary.selectorLabels" . }}
app.kubernetes.io/part-of: diary-platform
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "diary.chart" .ctx }}
{{- end -}}

{{- define "diary.serviceAccountName" -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}

{{- define "diary.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | toString) -}}
{{- end -}}

{{- define "diary.otelImage" -}}
{{- printf "%s:%s" .Values.otelCollector.image.repository (.Values.otelCollector.image.tag | toString) -}}
{{- end -}}

{{- define "diary.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "diary.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}
