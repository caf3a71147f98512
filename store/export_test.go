package store

// What the external tests read of the package's internals.

// DashboardSQL is the page queries of the dashboard's lists, for their plans.
func (s *Store) DashboardSQL() (inFlight, ended string) { return s.inFlightSQL(), s.endedSQL() }
