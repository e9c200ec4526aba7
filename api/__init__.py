"""FastAPI app factory, routers, auth, errors, SSE and the admin dashboard."""
