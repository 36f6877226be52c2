// Package memtrim owns lowering a long-running process's resident memory after
// start-up: it drops the page-table entries of the executable's read-only mappings
// (text and read-only data that package initialisers touched once) and returns freed
// heap to the operating system. Pages the process still uses fault back in from the
// page cache; nothing is written or lost.
package memtrim
