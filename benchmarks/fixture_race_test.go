//go:build race

package benchmarks

// fixtureEvents is the number of events in the store the read workloads
// read. Under the race detector, whose figures mean nothing, filling
// 100,000 would take CI's check over a minute.
const fixtureEvents = 5_000

// openFixtureEvents is the number of events in the store the Open workload
// opens.
const openFixtureEvents = 5_000

// shortFixtureEvents caps both fixtures under -short.
const shortFixtureEvents = 1_000
