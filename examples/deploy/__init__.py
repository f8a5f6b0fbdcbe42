"""Production setup files: nginx, systemd units, gunicorn entry point; see docs/deploying.rst."""
