// Package vigil holds Vigil's domain: the plain types every other package shares
// (patients, devices, assignments, readings, observations, alerts, users, dead
// letters), the interfaces that more than one package implements (the stores),
// and the one application error type whose codes each protocol maps to its own
// wire form in exactly one place.
//
// This package imports only the standard library; a test enforces it.
package vigil
