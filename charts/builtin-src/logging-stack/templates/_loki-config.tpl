{{/* Loki's configuration (YAML), before loki.extraConfig is merged over it. */}}
{{- define "logging-stack.lokiConfig" -}}
{{- $retention := include "logging-stack.retention" . -}}
{{- $limits := .Values.loki.limits -}}
# Single tenant: no X-Scope-OrgID needed (Loki files everything under the tenant "fake").
auth_enabled: false
server:
  http_listen_port: 3100
  grpc_listen_port: 9095
  log_level: {{ .Values.loki.logLevel }}
common:
  # Every component's files under the data volume: wal/, compactor/, rules-temp/,
  # tsdb-shipper-active/, tsdb-shipper-cache/ and the stores below.
  path_prefix: /loki
  storage:
    filesystem:
      chunks_directory: /loki/chunks
      rules_directory: /loki/rules
  # One instance: the rings live in memory, each stream is kept once, and the components
  # reach each other over the loopback.
  replication_factor: 1
  instance_addr: 127.0.0.1
  ring:
    kvstore:
      store: inmemory
schema_config:
  configs:
    # The current schema (v13, TSDB index, 24h index periods: what retention needs).
    - from: "2024-04-01"
      store: tsdb
      object_store: filesystem
      schema: v13
      index:
        prefix: index_
        period: 24h
ingester:
  wal:
    replay_memory_ceiling: {{ .Values.loki.walReplayMemoryCeiling }}
compactor:
  working_directory: /loki/compactor
  compaction_interval: 10m
  # Deletes what is older than limits_config.retention_period, 2h after marking it.
  retention_enabled: true
  retention_delete_delay: 2h
  # Required with retention since Loki 3.0: where delete requests are kept.
  delete_request_store: filesystem
limits_config:
  retention_period: {{ $retention }}
  {{- if ne $retention "0s" }}
  max_query_lookback: {{ $retention }}
  {{- end }}
  ingestion_rate_mb: {{ $limits.ingestionRateMB }}
  ingestion_burst_size_mb: {{ $limits.ingestionBurstSizeMB }}
  per_stream_rate_limit: {{ $limits.perStreamRateLimit }}
  per_stream_rate_limit_burst: {{ $limits.perStreamRateLimitBurst }}
  max_global_streams_per_user: {{ $limits.maxGlobalStreamsPerUser }}
  max_line_size: {{ $limits.maxLineSize }}
  reject_old_samples: true
  reject_old_samples_max_age: {{ $limits.rejectOldSamplesMaxAge }}
  max_entries_limit_per_query: {{ $limits.maxEntriesLimitPerQuery }}
# No usage reports to Grafana Labs (and no calls out of an air-gapped site).
analytics:
  reporting_enabled: false
{{- end -}}
