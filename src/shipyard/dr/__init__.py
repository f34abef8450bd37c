"""Disaster recovery: failover and failback of PostgreSQL, and drills that measure RTO and RPO."""
