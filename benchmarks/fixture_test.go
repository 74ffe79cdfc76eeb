//go:build !race

package benchmarks

// fixtureEvents is the number of events in the store the read workloads
// read.
const fixtureEvents = 100_000

// openFixtureEvents is the number of events in the store the Open workload
// opens.
const openFixtureEvents = 1_000_000

// shortFixtureEvents caps both fixtures under -short.
const shortFixtureEvents = 1_000
