// Package sidecar is wiring only: it runs the workload agent, the config store, the
// proxy and the admin server as one errgroup of Run(ctx) components, and turns each
// configuration snapshot into the proxy's Policy through the policy, authz and JWT
// packages (adapters in policy.go). SIGTERM (the context ending) makes the proxy stop
// accepting and drain with a deadline before the process exits.
package sidecar
