#!/bin/bash
# scripts/init-database-portable.sh

ENVIRONMENT=$1
ADMIN_EMAIL=$2
PROVIDER=$3  # fly, aws, gcp, local

case $PROVIDER in
  fly)
    DATABASE_CMD="fly postgres connect -a gaia-db-${ENVIRONMENT}"
    ;;
  aws)
    DATABASE_CMD="psql $DATABASE_URL"
    ;;
  gcp)
    DATABASE_CMD="gcloud sql connect gaia-${ENVIRONMENT} --user=postgres"
    ;;
  local)
    DATABASE_CMD="psql postgresql://postgres:postgres@localhost:5432/gaia_${ENVIRONMENT}"
    ;;
esac

# Run initialization SQL
cat <<EOF | $DATABASE_CMD
-- Create tables
$(cat schemas/core_tables.sql)
$(cat schemas/service_tables.sql)

-- Initialize admin user
INSERT INTO users (email, name) VALUES ('$ADMIN_EMAIL', 'Admin');

-- Create admin API key
INSERT INTO api_keys (user_id, key_hash, name, permissions)
SELECT id, SHA256('admin-key-${ENVIRONMENT}'), 'Admin Key', '{"admin": true}'::jsonb
FROM users WHERE email = '$ADMIN_EMAIL';
EOF
