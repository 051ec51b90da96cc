"""Offline checks of docker/ and deploy/ that need Python; run by scripts/check-deploy.sh as
`python -m check_deploy HELP_DIR` from scripts/ (see __main__.py).

One module per group of checks, each returning its problems (empty: passed):
  ecs             the ECS task definitions (deploy/ecs/*.json) and their env names
  cloudformation  the CloudFormation template (deploy/cloudformation.yaml)
  containers      docker/compose.yaml and docker/.env, docker/Dockerfile, docker/localstack/Dockerfile
                  and .dockerignore
  observability   metric names in the alerts and the Grafana dashboard
common holds the paths, the parsed inputs and the helpers they share.
"""
