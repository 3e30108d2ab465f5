-- 1.7: login tracking and conversation archiving.
ALTER TABLE users
  ADD COLUMN IF NOT EXISTS last_login_at DATETIME NULL AFTER preferences;

ALTER TABLE conversations
  ADD COLUMN IF NOT EXISTS archived TINYINT(1) NOT NULL DEFAULT 0 AFTER metadata;

CREATE INDEX IF NOT EXISTS idx_conversations_user_updated ON conversations (user_id, updated_at);
