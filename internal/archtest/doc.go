// Package archtest holds no code, only tests that keep the architecture honest: every
// package has one package comment, the data plane does not link the CA or Kubernetes
// client code, only the CLI and the demo import the wiring packages, test helpers stay in
// tests, and process exit, fatal logging and global loggers appear nowhere but main.
package archtest
