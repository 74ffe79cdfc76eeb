// Package v1 has a payload type whose name and package name another
// package's share, for TestRegisterTakenNameSamePackageName.
package v1

// Created is an event with the default event type name "Created".
type Created struct{ Order string }
