{{/* Names, labels and the bits every pod shares. */}}

{{- define "supportkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "supportkit.fullname" -}}
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

{{- define "supportkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "supportkit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "supportkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "supportkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: pass (dict "ctx" $ "component" "serve"). */}}
{{- define "supportkit.componentLabels" -}}
{{ include "supportkit.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "supportkit.componentSelector" -}}
{{ include "supportkit.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "supportkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "supportkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: pass (dict "ctx" $ "image" .Values.image.serve). A digest pins it. */}}
{{- define "supportkit.image" -}}
{{- $repo := .image.repository }}
{{- with .ctx.Values.image.registry }}{{ $repo = printf "%s/%s" . $repo }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "supportkit.adminSecretName" -}}
{{- default (printf "%s-admin" (include "supportkit.fullname" .)) .Values.adminToken.existingSecret }}
{{- end }}

{{- define "supportkit.judgeSecretName" -}}
{{- default (printf "%s-judges" (include "supportkit.fullname" .)) .Values.eval.existingSecret }}
{{- end }}

{{- define "supportkit.adaptersClaim" -}}
{{- default (printf "%s-adapters" (include "supportkit.fullname" .)) .Values.adapters.existingClaim }}
{{- end }}

{{- define "supportkit.modelClaim" -}}
{{- default (printf "%s-model" (include "supportkit.fullname" .)) .Values.model.pvc.existingClaim }}
{{- end }}

{{- define "supportkit.dataClaim" -}}
{{- default (printf "%s-data" (include "supportkit.fullname" .)) .Values.data.existingClaim }}
{{- end }}

{{- define "supportkit.reportsClaim" -}}
{{- default (printf "%s-reports" (include "supportkit.fullname" .)) .Values.eval.reports.existingClaim }}
{{- end }}

{{- define "supportkit.serveUrl" -}}
{{- printf "http://%s-serve.%s.svc:%v" (include "supportkit.fullname" .) .Release.Namespace .Values.serve.service.port }}
{{- end }}

{{/* The model volume: a PVC or a hostPath directory, mounted read-only at /models/base. */}}
{{- define "supportkit.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "hostPath" }}
  hostPath:
    path: {{ .Values.model.hostPath.path }}
    type: Directory
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "supportkit.modelClaim" . }}
    readOnly: true
{{- end }}
{{- end }}

{{- define "supportkit.modelMount" -}}
- name: model
  mountPath: /models/base
  readOnly: true
  {{- with .Values.model.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}

{{/* Environment every kit container shares: offline hubs, writable caches on volumes. */}}
{{- define "supportkit.commonEnv" -}}
- name: SUPPORTKIT_CACHE
  value: /cache
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /cache/huggingface
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: GRADIO_ANALYTICS_ENABLED
  value: "False"
{{- end }}

{{/* Extra env from a name: value map. */}}
{{- define "supportkit.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}

{{/* Resources with optional GPUs: pass (dict "resources" ... "gpu" ...). */}}
{{- define "supportkit.resources" -}}
{{- $res := deepCopy (default dict .resources) }}
{{- if .gpu.enabled }}
{{- $limits := default dict (get $res "limits") }}
{{- $requests := default dict (get $res "requests") }}
{{- $_ := set $limits .gpu.resourceName (.gpu.count | int) }}
{{- $_ := set $requests .gpu.resourceName (.gpu.count | int) }}
{{- $_ := set $res "limits" $limits }}
{{- $_ := set $res "requests" $requests }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/* Pod-level fields shared by every pod. */}}
{{- define "supportkit.podCommon" -}}
serviceAccountName: {{ include "supportkit.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The jobs image's pod template pieces: a container for `supportkit <args>`. */}}
{{- define "supportkit.tmpVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{/* Start of a jobs-image container: pass (dict "ctx" $ "name" "train"). */}}
{{- define "supportkit.jobContainerHead" -}}
- name: {{ .name }}
  image: {{ include "supportkit.image" (dict "ctx" .ctx "image" .ctx.Values.image.train) }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  securityContext:
    {{- toYaml .ctx.Values.securityContext | nindent 4 }}
{{- end }}

{{- define "supportkit.podName" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* Sweep file: the chart's ConfigMap (mounted at /configs) or the copy inside the jobs image. */}}
{{- define "supportkit.sweepPath" -}}
{{- if or .Values.train.sweep .Values.train.existingConfigMap }}/configs/sweep.yaml{{ else }}{{ .Values.train.builtinConfigPath }}{{ end }}
{{- end }}

{{- define "supportkit.panelPath" -}}
{{- if or .Values.eval.panel .Values.eval.existingConfigMap }}/configs/panel.yaml{{ else }}{{ .Values.eval.builtinPanelPath }}{{ end }}
{{- end }}

{{/* The eval pod spec, shared by the Job and the CronJob. */}}
{{- define "supportkit.evalPodSpec" -}}
{{ include "supportkit.podCommon" . }}
restartPolicy: Never
containers:
  {{- include "supportkit.jobContainerHead" (dict "ctx" . "name" "eval") | nindent 2 }}
    command: [supportkit, eval, run]
    args:
      - --endpoint={{ include "supportkit.serveUrl" . }}
      - --panel={{ include "supportkit.panelPath" . }}
      - --out=/reports/$(POD_NAME)
      - --adapters=/adapters
      {{- with .Values.eval.targets }}
      - --targets={{ . }}
      {{- end }}
      {{- if .Values.eval.limit }}
      - --limit={{ .Values.eval.limit }}
      {{- end }}
      {{- range .Values.eval.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      {{- include "supportkit.podName" . | nindent 6 }}
      {{- include "supportkit.commonEnv" . | nindent 6 }}
      {{- if not (hasKey .Values.eval.env "SUPPORTKIT_JUDGE_URL") }}
      # The kit's local LLM judge is the served base model unless the panel points elsewhere.
      - name: SUPPORTKIT_JUDGE_URL
        value: {{ include "supportkit.serveUrl" . }}
      {{- end }}
      {{- with .Values.eval.env }}{{ include "supportkit.extraEnv" . | trim | nindent 6 }}{{ end }}
    {{- if or .Values.eval.judgeApiKeys .Values.eval.existingSecret }}
    # Judge API keys arrive as env vars from a Secret, never as arguments.
    envFrom:
      - secretRef:
          name: {{ include "supportkit.judgeSecretName" . }}
    {{- end }}
    resources:
      {{- toYaml .Values.eval.resources | nindent 6 }}
    volumeMounts:
      - name: reports
        mountPath: /reports
      - name: adapters
        mountPath: /adapters
        readOnly: true
      - name: cache
        mountPath: /cache
      - name: tmp
        mountPath: /tmp
      {{- if or .Values.eval.panel .Values.eval.existingConfigMap }}
      - name: config
        mountPath: /configs
        readOnly: true
      {{- end }}
volumes:
  - name: reports
    persistentVolumeClaim:
      claimName: {{ include "supportkit.reportsClaim" . }}
  - name: adapters
    persistentVolumeClaim:
      claimName: {{ include "supportkit.adaptersClaim" . }}
      readOnly: true
  - name: cache
    emptyDir:
      sizeLimit: 2Gi
  {{- include "supportkit.tmpVolumes" . | nindent 2 }}
  {{- if or .Values.eval.panel .Values.eval.existingConfigMap }}
  - name: config
    configMap:
      name: {{ default (printf "%s-eval" (include "supportkit.fullname" .)) .Values.eval.existingConfigMap }}
  {{- end }}
{{- end }}

{{/* Egress to the cluster DNS: pass .Values.networkPolicy.dns. */}}
{{- define "supportkit.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* A claim the chart creates (kept on uninstall). */}}
{{- define "supportkit.pvc" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "supportkit.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml .accessModes | nindent 4 }}
  {{- with .storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ .size }}
{{- end }}
