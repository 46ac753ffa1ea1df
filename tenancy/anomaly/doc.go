// Package anomaly is the model behind Gatehouse's anomaly alerts: what is
// learned about one principal (a person or an API key, within one tenant)
// from its audit records, and which records are unusual enough to alert
// on. It is pure computation: no database, no clock of its own, no I/O.
// The detector that feeds it (mcp's alert pass, which reads committed,
// chained audit records and keeps each principal's [State] in the control
// schema) is described in mcp/alerts.go and docs/alerts.md.
//
// Four kinds of alert ([Kind]):
//
//   - [NewNetwork]: a call that ran (ALLOWED or ERROR) came from a network
//     the principal has not used before. A network is the IPv4 /24 or the
//     IPv6 /48 of the client address (IPv4-mapped IPv6 counts as IPv4): a
//     host moving inside its office or home network is not news, a move to
//     another site or provider is. Silent while the principal is learning
//     (its first record is less than [Settings.Learning] old) and for
//     roaming principals (at least [Settings.RoamLimit] new networks within
//     [Settings.RoamWindow]: laptops on the move, CI keys on hosted runner
//     pools), whose new networks say little.
//   - [DenialBurst]: at least [Settings.DenialLimit] denials (DENIED
//     records) and failed authentications naming the principal's API key
//     within [Settings.DenialWindow].
//   - [Volume]: the calls of the current clock hour (every record counts
//     its Count: ALLOWED, DENIED, ERROR, RATE_LIMITED) exceed both
//     [Settings.VolumeFloor] and [Settings.VolumeFactor] × the principal's
//     baseline, an exponentially weighted moving average (α =
//     [Settings.VolumeAlpha]) over the hours in which it made any call (idle
//     hours are skipped, so nights and weekends do not drag it down and a
//     Monday morning is not a spike). Silent until [Settings.VolumeMinHours]
//     active hours are known; from then on each hour enters the average
//     capped at the threshold, so one burst cannot teach a much higher
//     baseline.
//   - [OffHours]: an admin action (a tool that needs mcp:admin, through MCP
//     or the console) at a UTC hour where the principal's own history of
//     admin actions, smoothed over ±2 hours, holds less than
//     [Settings.AdminMinShare] of them; needs [Settings.AdminMinActions]
//     admin actions spread over at least [Settings.Learning] first.
//
// Each kind alerts at most once per principal per [Settings.Cooldown].
// Alerts never block a call by themselves; [Kind.Suspendable] says which
// kinds may revoke a key when the operator asks for it: only kinds that
// need the key's successful use, never DenialBurst (failed authentications
// naming a key id can be sent by anyone).
//
// Import rules: anomaly imports only the standard library.
package anomaly
