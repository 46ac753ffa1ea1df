//go:build race

package anomaly_test

// raceOn: the race detector is on (it makes the fixture's runs several
// times slower).
const raceOn = true
