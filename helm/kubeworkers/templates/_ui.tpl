{{- /* The namespace the web console shows: ui.namespace, else operator.watchNamespace, else "default". */}}
{{- define "kubeworkers.ui.namespace" -}}
{{- .Values.ui.namespace | default .Values.operator.watchNamespace | default "default" -}}
{{- end }}
