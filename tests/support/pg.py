"""PostgreSQL fixture: a private throwaway server (owned by the store work)."""
