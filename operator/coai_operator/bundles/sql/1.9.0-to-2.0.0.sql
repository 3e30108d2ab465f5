-- 2.0 (expand): RBAC tables, MFA columns, channel format 2. The contract part (dropping
-- users.is_admin) is a later step of this hop, after every user has a role.
CREATE TABLE IF NOT EXISTS permissions (
  id INT UNSIGNED NOT NULL,
  name VARCHAR(64) NOT NULL,
  description VARCHAR(255) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  UNIQUE KEY uk_permissions_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Role ids are fixed (not AUTO_INCREMENT) so a re-run after a crash assigns the same ids.
CREATE TABLE IF NOT EXISTS roles (
  id INT UNSIGNED NOT NULL,
  name VARCHAR(64) NOT NULL,
  description VARCHAR(255) NOT NULL DEFAULT '',
  permissions JSON NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_roles_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS user_roles (
  user_id BIGINT UNSIGNED NOT NULL,
  role_id INT UNSIGNED NOT NULL,
  PRIMARY KEY (user_id, role_id),
  KEY idx_user_roles_role (role_id),
  CONSTRAINT fk_user_roles_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT fk_user_roles_role FOREIGN KEY (role_id) REFERENCES roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE users
  ADD COLUMN IF NOT EXISTS mfa_enabled TINYINT(1) NOT NULL DEFAULT 0 AFTER preferences,
  ADD COLUMN IF NOT EXISTS mfa_secret VARCHAR(255) NULL AFTER mfa_enabled;

ALTER TABLE channels
  ADD COLUMN IF NOT EXISTS format_version TINYINT UNSIGNED NOT NULL DEFAULT 2 AFTER state,
  ADD COLUMN IF NOT EXISTS health_check_enabled TINYINT(1) NOT NULL DEFAULT 1 AFTER format_version,
  ADD COLUMN IF NOT EXISTS load_balancing VARCHAR(32) NOT NULL DEFAULT 'round_robin' AFTER health_check_enabled;

CREATE INDEX IF NOT EXISTS idx_conversations_model ON conversations (model_name);
