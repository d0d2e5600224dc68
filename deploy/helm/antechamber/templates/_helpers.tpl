{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a name.
*/}}
{{- define "antechamber.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix: <release>-<chart> unless the release name already contains the chart name.
*/}}
{{- define "antechamber.fullname" -}}
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

{{/*
Chart label value.
*/}}
{{- define "antechamber.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of one component's resources. Call with (dict "ctx" $ "component" "links").
*/}}
{{- define "antechamber.componentName" -}}
{{- printf "%s-%s" (include "antechamber.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource of the release (no component).
*/}}
{{- define "antechamber.commonLabels" -}}
helm.sh/chart: {{ include "antechamber.chart" . }}
app.kubernetes.io/name: {{ include "antechamber.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: antechamber
{{- end }}

{{/*
Selector labels of the whole release (every component).
*/}}
{{- define "antechamber.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "antechamber.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "links").
*/}}
{{- define "antechamber.selectorLabels" -}}
{{ include "antechamber.releaseSelectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component. Call with (dict "ctx" $ "component" "links").
*/}}
{{- define "antechamber.labels" -}}
{{ include "antechamber.commonLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "antechamber.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the Secret holding DATABASE_URL, NATS_URL and ANTECHAMBER_OPERATOR_KEY.
*/}}
{{- define "antechamber.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-env" (include "antechamber.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap with the settings that are not secret.
*/}}
{{- define "antechamber.configName" -}}
{{- printf "%s-config" (include "antechamber.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
One variable from the Secret. Call with (list $ "ENV_NAME" "secretKeysEntry" optional).
*/}}
{{- define "antechamber.secretEnv" -}}
{{- $ctx := index . 0 }}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "antechamber.secretName" $ctx }}
      key: {{ index $ctx.Values.secretKeys (index . 2) }}
      {{- if index . 3 }}
      optional: true
      {{- end }}
{{- end }}

{{/*
Environment shared by service containers and the migration Job (the ConfigMap
comes in through envFrom).
*/}}
{{- define "antechamber.env" -}}
{{ include "antechamber.secretEnv" (list . "DATABASE_URL" "databaseUrl" false) }}
{{ include "antechamber.secretEnv" (list . "NATS_URL" "natsUrl" false) }}
{{ include "antechamber.secretEnv" (list . "ANTECHAMBER_OPERATOR_KEY" "operatorKey" false) }}
{{ include "antechamber.secretEnv" (list . "ANTECHAMBER_LINK_KEY" "linkKey" false) }}
{{ include "antechamber.secretEnv" (list . "ANTECHAMBER_PARTICIPANT_KEY" "participantKey" false) }}
{{ include "antechamber.secretEnv" (list . "ANTECHAMBER_NOTIFY_SMTP_PASSWORD" "smtpPassword" true) }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Whether a service gets a PodDisruptionBudget. Call with the service's values; returns "true" or "".
*/}}
{{- define "antechamber.wantsPdb" -}}
{{- if or (gt (int .replicaCount) 1) .autoscaling.enabled }}true{{- end }}
{{- end }}
