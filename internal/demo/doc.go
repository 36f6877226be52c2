// Package demo is `meshguard demo`: it brings up a whole mesh on loopback — a control
// plane with temporary data and config directories, and a bookinfo-like application
// (productpage calls reviews, reviews calls ratings), each service an unchanged HTTP
// server with its own sidecar and service account — then walks through the seeds'
// scenarios, applying each example YAML (package examples) into the config directory and
// showing what real requests do, one ✓/✗ line per check. Each sidecar is
// sidecar.RunProcess, the wiring `meshguard sidecar` runs, in this process.
//
// It is a wiring package like cli: it may import controlplane and sidecar, and nothing
// imports it but cli. Run(ctx, cfg) blocks until the walkthrough is done (Once) or ctx
// ends, and stops everything it started before returning.
package demo
