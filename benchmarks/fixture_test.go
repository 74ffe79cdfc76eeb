//go:build !race

package benchmarks

// fixtureEvents is the number of events in the store the read workloads
// read.
const fixtureEvents = 100_000
