import Foundation

/// A maintenance window: days of the week and a time range, in UTC or a named zone (IANA, e.g. "Europe/Berlin").
///
/// `end <= start` means the range crosses midnight: 22:00–04:00 on "fri" covers Friday 22:00 to Saturday 04:00 (the
/// part after midnight belongs to the day it started on). `start == end` covers 24 hours from `start`. Times are
/// local to `zone`, so the zone's rules handle daylight saving: a window in a local time that a DST change skips is
/// shorter that day.
public struct MaintenanceWindow: Sendable, Equatable, Codable {
    /// "mon".."sun" (lowercase, three letters); empty = every day.
    public var days: [String]
    /// "HH:MM", 24-hour clock.
    public var start: String
    /// "HH:MM"; `end <= start` means the range crosses midnight.
    public var end: String
    /// nil or "UTC" = UTC.
    public var zone: String?

    public init(days: [String], start: String, end: String, zone: String?) {
        self.days = days
        self.start = start
        self.end = end
        self.zone = zone
    }

    /// Day names in `Calendar` weekday order (1 = Sunday).
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Throws `invalid_window`, naming the bad field, for unknown day names, bad "HH:MM" and unknown zones.
    public func validate() throws(Refusal) {
        _ = try resolve(prefix: "window", index: nil)
    }

    /// True when `unix` (seconds) falls inside the window. An invalid window contains nothing.
    public func contains(_ unix: Int64) -> Bool {
        guard let resolved = try? resolve(prefix: "window", index: nil) else { return false }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = resolved.zone
        let date = Date(timeIntervalSince1970: TimeInterval(unix))
        let local = calendar.dateComponents([.weekday, .hour, .minute], from: date)
        guard let weekday = local.weekday, let hour = local.hour, let minute = local.minute else { return false }
        let minuteOfDay = hour * 60 + minute
        let today = weekday - 1  // 0 = Sunday
        let yesterday = (today + 6) % 7
        func dayAllowed(_ day: Int) -> Bool { resolved.days.isEmpty || resolved.days.contains(day) }

        if resolved.start < resolved.end {
            return dayAllowed(today) && minuteOfDay >= resolved.start && minuteOfDay < resolved.end
        }
        // Crosses midnight (or covers 24 hours when start == end).
        return (dayAllowed(today) && minuteOfDay >= resolved.start)
            || (dayAllowed(yesterday) && minuteOfDay < resolved.end)
    }

    /// Parses from a JSON object (`[String: Any]` from JSONSerialization): "days" (array of strings, optional),
    /// "start" and "end" (strings, required), "zone" (string or null, optional). `index` names the window in
    /// messages ("windows[1].start ..."). The result is validated.
    public static func parse(_ object: Any, index: Int) throws(Refusal) -> MaintenanceWindow {
        let name = "windows[\(index)]"
        func refuse(_ field: String?, _ problem: String) -> Refusal {
            let path = field.map { "\(name).\($0)" } ?? name
            var details: [String: RefusalValue] = ["window": .int(Int64(index))]
            if let field { details["field"] = .string(field) }
            return Refusal("invalid_window", "\(path) \(problem)", details: details)
        }
        guard let dictionary = object as? [String: Any] else {
            throw refuse(nil, "must be an object with \"start\", \"end\" and optionally \"days\" and \"zone\"")
        }
        var days: [String] = []
        if let value = dictionary["days"], !(value is NSNull) {
            guard let array = value as? [Any] else {
                throw refuse("days", "must be an array of day names (mon..sun)")
            }
            for (position, element) in array.enumerated() {
                guard let day = element as? String else {
                    throw refuse("days[\(position)]", "must be a string (mon..sun)")
                }
                days.append(day)
            }
        }
        func time(_ key: String) throws(Refusal) -> String {
            guard let value = dictionary[key], !(value is NSNull) else {
                throw refuse(key, "is required (\"HH:MM\", 24-hour clock)")
            }
            guard let text = value as? String else {
                throw refuse(key, "must be a string \"HH:MM\" (24-hour clock)")
            }
            return text
        }
        let start = try time("start")
        let end = try time("end")
        var zone: String?
        if let value = dictionary["zone"], !(value is NSNull) {
            guard let text = value as? String else {
                throw refuse("zone", "must be a string naming a time zone (e.g. \"UTC\" or \"Europe/Berlin\")")
            }
            zone = text
        }
        let window = MaintenanceWindow(days: days, start: start, end: end, zone: zone)
        _ = try window.resolve(prefix: name, index: index)
        return window
    }

    // MARK: - Resolution

    struct Resolved {
        var days: Set<Int>
        var start: Int
        var end: Int
        var zone: TimeZone
    }

    func resolve(prefix: String, index: Int?) throws(Refusal) -> Resolved {
        func refuse(_ field: String, _ value: String, _ problem: String) -> Refusal {
            var details: [String: RefusalValue] = ["field": .string(field), "value": .string(value)]
            if let index { details["window"] = .int(Int64(index)) }
            return Refusal("invalid_window", "\(prefix).\(field) \(problem)", details: details)
        }
        var daySet: Set<Int> = []
        for day in days {
            guard let number = Self.dayNames.firstIndex(of: day) else {
                throw refuse(
                    "days", day, "holds '\(day)', which is not a day name (use mon, tue, wed, thu, fri, sat, sun)")
            }
            daySet.insert(number)
        }
        guard let startMinute = Self.minuteOfDay(start) else {
            throw refuse("start", start, "is '\(start)', not a time \"HH:MM\" (24-hour clock, 00:00 to 23:59)")
        }
        guard let endMinute = Self.minuteOfDay(end) else {
            throw refuse("end", end, "is '\(end)', not a time \"HH:MM\" (24-hour clock, 00:00 to 23:59)")
        }
        let timeZone: TimeZone
        if let zone, zone != "UTC" {
            guard !zone.isEmpty, let named = TimeZone(identifier: zone) else {
                throw refuse(
                    "zone", zone,
                    "is '\(zone)', not a known time zone (use \"UTC\" or an IANA name like \"Europe/Berlin\")")
            }
            timeZone = named
        } else {
            timeZone = .gmt
        }
        return Resolved(days: daySet, start: startMinute, end: endMinute, zone: timeZone)
    }

    /// Minutes since midnight for exactly "HH:MM" (two digits each), 00:00 to 23:59.
    static func minuteOfDay(_ text: String) -> Int? {
        let bytes = Array(text.utf8)
        guard bytes.count == 5, bytes[2] == UInt8(ascii: ":") else { return nil }
        let digits = [bytes[0], bytes[1], bytes[3], bytes[4]]
        guard digits.allSatisfy({ (48...57).contains($0) }) else { return nil }
        let values = digits.map { Int($0 - 48) }
        let hour = values[0] * 10 + values[1]
        let minute = values[2] * 10 + values[3]
        guard hour < 24, minute < 60 else { return nil }
        return hour * 60 + minute
    }
}

extension Array where Element == MaintenanceWindow {
    /// No windows: always open. Otherwise open when any window contains `unix`.
    public func isOpen(at unix: Int64) -> Bool {
        isEmpty || contains { $0.contains(unix) }
    }
}
