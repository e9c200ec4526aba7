# The api and worker images of docker-compose.yml (no Docker engine runs on the dev machines:
# this file is kept valid, not exercised).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY meter meter
COPY lua lua
COPY sync sync
COPY worker worker
COPY api api
COPY cli cli
COPY bench bench
COPY examples examples
# Not editable: the wheel carries the Lua scripts, migrations, templates and static files.
RUN pip install --no-cache-dir .
ENV CREDITMETER_DATA_DIR=/data
CMD ["creditmeter", "api", "--host", "0.0.0.0", "--port", "8000"]
