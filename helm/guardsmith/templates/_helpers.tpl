{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "guardsmith.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "guardsmith.fullname" -}}
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

{{- define "guardsmith.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "guardsmith.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guardsmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "guardsmith.labels" -}}
helm.sh/chart: {{ include "guardsmith.chart" . }}
{{ include "guardsmith.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: guardsmith
{{- end }}

{{/* Image reference from {repository, tag, digest}: repository@digest when a digest is set. */}}
{{- define "guardsmith.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (required "an image needs a tag or a digest" .tag) }}
{{- end }}
{{- end }}

{{- define "guardsmith.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-submitter" (include "guardsmith.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret for entry .key of .Values.secrets: existingSecret, else its name. */}}
{{- define "guardsmith.secretName" -}}
{{- $s := index .root.Values.secrets .key }}
{{- default $s.name $s.existingSecret }}
{{- end }}

{{/* Namespace whose KFP API rights the submitter gets (multi-user profile namespace). */}}
{{- define "guardsmith.kfpNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace }}
{{- end }}

{{/* Environment shared by the upload hook and the scheduled runs. */}}
{{- define "guardsmith.jobEnv" -}}
- name: KFP_HOST
  value: {{ .Values.kfp.host | quote }}
{{- with .Values.kfp.namespace }}
- name: KFP_NAMESPACE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kfp.existingTokenSecret }}
- name: GUARDSMITH_KFP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: token
{{- end }}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /cache
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "guardsmith.secretName" (dict "root" . "key" "s3") }}
      key: AWS_ACCESS_KEY_ID
      optional: true
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "guardsmith.secretName" (dict "root" . "key" "s3") }}
      key: AWS_SECRET_ACCESS_KEY
      optional: true
- name: GUARDSMITH_S3_ENDPOINT
  valueFrom:
    secretKeyRef:
      name: {{ include "guardsmith.secretName" (dict "root" . "key" "s3") }}
      key: GUARDSMITH_S3_ENDPOINT
      optional: true
{{- end }}

{{/* Volumes of the upload hook and scheduled runs: pipelines ConfigMap, scratch, KFP token. */}}
{{- define "guardsmith.jobVolumes" -}}
- name: pipelines
  configMap:
    name: {{ include "guardsmith.fullname" . }}-pipelines
    items:
      {{- range $path, $_ := .Files.Glob "files/pipelines/*/pipeline.yaml" }}
      {{- $rel := trimPrefix "files/pipelines/" $path }}
      - key: {{ $rel | replace "/" "." }}
        path: {{ $rel }}
      {{- end }}
      {{- range $path, $_ := .Files.Glob "files/pipelines/*/presets/*.yaml" }}
      {{- $rel := trimPrefix "files/pipelines/" $path }}
      - key: {{ $rel | replace "/" "." }}
        path: {{ $rel }}
      {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: cache
  emptyDir:
    sizeLimit: 1Gi
{{- if .Values.kfp.multiUser }}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: pipelines.kubeflow.org
          expirationSeconds: 7200
{{- end }}
{{- end }}

{{- define "guardsmith.jobVolumeMounts" -}}
- name: pipelines
  mountPath: /etc/guardsmith/pipelines
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- if .Values.kfp.multiUser }}
- name: kfp-token
  mountPath: /var/run/secrets/kubeflow/pipelines
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload of the chart. */}}
{{- define "guardsmith.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* S3 credentials and endpoint from the s3 Secret (serving pods: model downloads, collection). */}}
{{- define "guardsmith.s3Env" -}}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "GUARDSMITH_S3_ENDPOINT" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "guardsmith.secretName" (dict "root" $.root "key" "s3") }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}

{{/* Names of the serving objects; .key: guard-model, generator-model, guard, gateway. */}}
{{- define "guardsmith.servingName" -}}
{{- printf "%s-%s" (include "guardsmith.fullname" .root) .key | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The model URI a model server downloads: <uri>, or the pinned version <uri>/versions/<version>. */}}
{{- define "guardsmith.servingModelUri" -}}
{{- $uri := required (printf "serving.models.%s.uri is required when that model server is enabled" .key) .model.uri | trimSuffix "/" }}
{{- if .model.version }}
{{- printf "%s/versions/%s" $uri .model.version }}
{{- else }}
{{- $uri }}
{{- end }}
{{- end }}
