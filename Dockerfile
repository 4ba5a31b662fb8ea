# The orchestrator as a container image: `gitops-orchestrator` as a non-root user, state in /data.
#
# BASE is any Debian bookworm image with python3 (3.11) and its venv module: the public Python
# slim image by default; `make test-image` passes a local one made with debootstrap, since no
# image registry is reachable there. Only runtime dependencies are installed (not the dev extra).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
# The dependencies first, read from pyproject.toml: a change to the code alone then reuses
# this layer instead of downloading every dependency again.
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /src/requirements.txt \
    && /opt/venv/bin/pip install --requirement /src/requirements.txt
COPY README.md /src/
COPY gitops_orchestrator /src/gitops_orchestrator
# pip and setuptools only install: the running image does without them (about 25 MB).
RUN /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM ${BASE}
# git reads the repositories (GitPython runs it); openssh-client fetches ssh:// remotes.
# Versions are not pinned: they are whatever the base image's Debian release ships.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git openssh-client ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
# A repository mounted at /repo belongs to the host's user, not to ours, and git refuses such a
# repository ("dubious ownership") unless it is marked safe; so is the bundled sample (root's).
ENV SAMPLE_REPO=/usr/share/gitops-orchestrator/sample-repo
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home gitops \
    && mkdir /data /repo && chown gitops:gitops /data \
    && git config --system --add safe.directory /repo \
    && git config --system --add safe.directory "$SAMPLE_REPO"
# The bundled sample as a git repository (what `gitops-orchestrator demo` makes), so that the
# compose demo runs with nothing to prepare; the commit's dates are fixed to keep it one commit.
COPY sample-repo ${SAMPLE_REPO}
RUN git -C "$SAMPLE_REPO" init --quiet --initial-branch=main \
    && git -C "$SAMPLE_REPO" add --all \
    && GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z \
       git -C "$SAMPLE_REPO" -c user.name=gitops-orchestrator -c user.email=demo@localhost \
       commit --quiet --message "The sample fleet"
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GITOPS_DATA_DIR=/data \
    GITOPS_HOST=0.0.0.0 \
    GITOPS_PORT=3000
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GITOPS_PORT', '3000') + '/healthz', timeout=4)"]
ENTRYPOINT ["gitops-orchestrator"]
CMD ["serve"]
