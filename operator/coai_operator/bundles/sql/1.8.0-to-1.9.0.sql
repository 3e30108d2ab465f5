-- 1.9: new file processing engine, analytics dashboard, channel health monitoring.
ALTER TABLE files
  ADD COLUMN IF NOT EXISTS processing_status VARCHAR(16) NOT NULL DEFAULT 'none' AFTER storage_backend,
  ADD COLUMN IF NOT EXISTS processed_at DATETIME NULL AFTER processing_status,
  ADD COLUMN IF NOT EXISTS sha256 CHAR(64) NULL AFTER processed_at;

CREATE TABLE IF NOT EXISTS file_processing_jobs (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  file_id BIGINT UNSIGNED NOT NULL,
  engine VARCHAR(16) NOT NULL DEFAULT 'v2',
  status VARCHAR(16) NOT NULL DEFAULT 'queued',
  ocr_languages VARCHAR(64) NULL,
  error TEXT NULL,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  finished_at DATETIME NULL,
  PRIMARY KEY (id),
  KEY idx_file_processing_jobs_file (file_id),
  KEY idx_file_processing_jobs_status (status),
  CONSTRAINT fk_file_processing_jobs_file FOREIGN KEY (file_id) REFERENCES files (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS analytics_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT UNSIGNED NULL,
  event_type VARCHAR(32) NOT NULL,
  model_name VARCHAR(128) NULL,
  tokens INT UNSIGNED NOT NULL DEFAULT 0,
  details JSON NULL,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY idx_analytics_events_created (created_at),
  KEY idx_analytics_events_user_created (user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS analytics_daily (
  day DATE NOT NULL,
  model_name VARCHAR(128) NOT NULL,
  conversation_count BIGINT UNSIGNED NOT NULL DEFAULT 0,
  token_count BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (day, model_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE channels
  ADD COLUMN IF NOT EXISTS health_status VARCHAR(16) NOT NULL DEFAULT 'unknown' AFTER state,
  ADD COLUMN IF NOT EXISTS last_health_check_at DATETIME NULL AFTER health_status,
  ADD COLUMN IF NOT EXISTS consecutive_failures INT UNSIGNED NOT NULL DEFAULT 0 AFTER last_health_check_at;

CREATE TABLE IF NOT EXISTS channel_health_checks (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  channel_id INT UNSIGNED NOT NULL,
  checked_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  ok TINYINT(1) NOT NULL,
  latency_ms INT UNSIGNED NULL,
  error TEXT NULL,
  PRIMARY KEY (id),
  KEY idx_channel_health_checks_channel (channel_id, checked_at),
  CONSTRAINT fk_channel_health_checks_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
