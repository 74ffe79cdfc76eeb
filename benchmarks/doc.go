// Package benchmarks measures eventbus next to the in-process event buses
// users would pick instead, and its file store next to bbolt and SQLite, in
// one run on one machine.
//
// It is a module of its own so that the peers never enter the library's
// go.mod. Everything lives in the tests: peers_test.go wraps each peer behind
// one small interface, bench_test.go runs the workloads over the table of
// peers (storepeers_test.go and storebench_test.go do the same for the
// stores), check_test.go proves that per-key order and goroutine hygiene
// hold, that the checks catch peers broken on purpose and that the store
// peers are set to sync as the README says, and runsh_test.go runs run.sh
// with a stub go command. See README.md for how to run it and for the figures.
package benchmarks
