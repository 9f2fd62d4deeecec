// Railway Infrastructure as Code for the gpu-orchestrator service.
//
// Applied with the Railway CLI (5.42.1 or newer), from the repository root:
//   npm install --no-save railway@3   # the SDK this file imports; Node.js 22.6+
//   railway link && railway config plan && railway config apply
// Written against the `railway` npm package 3.11.0 (import "railway/iac"). It
// states the same settings as railway.toml (legacy Config as Code, read until
// 2026-12-01); Railway will not plan a service that railway.toml still manages,
// so delete railway.toml when you switch. tests/test_deploy_files.py keeps the
// two files in step. The reasons for each value are in railway.toml and
// docs/deploy.md.

import { defineRailway, github, preserve, project, service } from "railway/iac";

// This file manages only the resources it names: other services in the same
// Railway project are left alone. Never rename a partial once applied.
export const partial = "gpu-orchestrator";

// "owner/repo" to deploy from GitHub on every push to BRANCH; leave undefined to
// deploy with `railway up` from a checkout instead.
const GITHUB_REPO: string | undefined = undefined;
const BRANCH = "main";

export default defineRailway((ctx) => {
  const orchestrator = service("gpu-orchestrator", {
    ...(GITHUB_REPO ? { source: github(GITHUB_REPO, { branch: BRANCH }) } : {}),
    // No build settings: Railway builds with the repository's Dockerfile whenever
    // it finds one (`railway config migrate` does not carry builder/dockerfilePath
    // over either).
    start: "gpu-orchestrator run",
    healthcheck: "/readyz",
    healthcheckTimeout: 120,
    replicas: 1,
    deploy: {
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
      overlapSeconds: 0,
      drainingSeconds: 120,
    },
    // A variable this file does not name is planned for deletion, so every
    // variable the service may carry is listed. preserve() keeps whatever value
    // the service has (set in the dashboard or with `railway variables --set`),
    // and changes nothing when it has none; no value is ever written here. Add
    // any other setting you use (docs/configuration.md) the same way.
    env: {
      // required in production (RUNPOD_WORKER_IMAGE or RUNPOD_TEMPLATE_ID)
      DATABASE_URL: preserve(),
      RUNPOD_API_KEY: preserve(),
      RUNPOD_WORKER_IMAGE: preserve(),
      RUNPOD_TEMPLATE_ID: preserve(),
      RUNPOD_GPU_TYPES: preserve(),
      MAX_ACTIVE_GPUS: preserve(),
      // often set
      WORKER_DATABASE_URL: preserve(),
      RUNPOD_DATA_CENTER_IDS: preserve(),
      RUNPOD_CLOUD: preserve(),
      RUNPOD_WORKER_ENV: preserve(),
      MIN_ACTIVE_GPUS: preserve(),
      ORCHESTRATOR_POLL_SEC: preserve(),
      ALERT_WEBHOOK_URL: preserve(),
      LOG_LEVEL: preserve(),
      LOG_FORMAT: "json",
    },
  });

  // The linked project's name, which the CLI passes in; the fallback only names
  // a project that does not exist yet.
  return project(ctx.projectName ?? "gpu-orchestrator", {
    resources: [orchestrator],
  });
});
