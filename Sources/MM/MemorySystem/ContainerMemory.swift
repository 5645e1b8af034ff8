// SPDX-License-Identifier: Apache-2.0
import Glibc

/// What the operating system allows this process: the memory cgroup's
/// limits and the machine's physical memory.
///
/// ```swift
/// let container = ContainerMemory.current()
/// let mm = try MemorySystem(.sized(for: container))   // capacity: physical; limit: the cgroup's
/// ```
///
/// Read from cgroup v2 (`memory.max`, `memory.high`; `max` means none) at
/// the process's own cgroup (`/proc/self/cgroup`), else cgroup v1
/// (`memory/memory.limit_in_bytes`; a value near `Int.max` means none).
/// Kernel analogue: what `systemd`, the JVM and Go's runtime read to size
/// themselves inside a container.
public struct ContainerMemory: Sendable, Hashable, CustomStringConvertible {
    /// The hard limit (`memory.max` / `memory.limit_in_bytes`); nil: none.
    public var max: Int?
    /// The throttling limit (`memory.high`, cgroup v2 only); nil: none.
    public var high: Int?
    /// Physical memory of the machine, in bytes.
    public var physicalMemory: Int
    /// The directory the limits were read from, or nil when no memory cgroup was found.
    public var cgroupDirectory: String?

    /// The budget a process should keep to: the lowest of `high`, `max`
    /// and physical memory.
    public var budget: Int { Swift.min(physicalMemory, high ?? .max, max ?? .max) }

    /// Limits given explicitly (tests, or values from elsewhere).
    public init(max: Int?, high: Int?, physicalMemory: Int, cgroupDirectory: String?) {
        self.max = max
        self.high = high
        self.physicalMemory = physicalMemory
        self.cgroupDirectory = cgroupDirectory
    }

    /// This process's limits, read now.
    public static func current() -> ContainerMemory {
        read(cgroupRoot: "/sys/fs/cgroup", procSelfCgroup: "/proc/self/cgroup",
             physicalMemory: sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The limits under a cgroup file-system root (`/sys/fs/cgroup`, or a
    /// directory laid out like it), for the cgroup named in
    /// `procSelfCgroup` (a file in `/proc/self/cgroup`'s format; the root
    /// itself when missing). Unreadable or malformed files count as "no limit".
    /// - Parameters:
    ///   - cgroupRoot: the cgroup file system's root, or a directory laid out like it.
    ///   - procSelfCgroup: a file in `/proc/self/cgroup`'s format.
    ///   - physicalMemory: the machine's memory, bytes.
    /// - Returns: the limits found.
    public static func read(cgroupRoot: String, procSelfCgroup: String, physicalMemory: Int) -> ContainerMemory {
        var result = ContainerMemory(max: nil, high: nil, physicalMemory: physicalMemory, cgroupDirectory: nil)
        // cgroup v2: "0::/path" in /proc/self/cgroup; the limits are in <root>/<path>.
        var v2Path = "/"
        var v1Path = "/"
        if let text = readFile(procSelfCgroup) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else { continue }
                if parts[0] == "0" && parts[1].isEmpty { v2Path = String(parts[2]) }
                if parts[1].split(separator: ",").contains("memory") { v1Path = String(parts[2]) }
            }
        }
        for directory in [cgroupRoot + (v2Path == "/" ? "" : v2Path), cgroupRoot] {
            guard let max = readFile(directory + "/memory.max") else { continue }
            result.cgroupDirectory = directory
            result.max = parseLimit(max, physicalMemory: physicalMemory)
            result.high = readFile(directory + "/memory.high").flatMap { parseLimit($0, physicalMemory: physicalMemory) }
            return result
        }
        for directory in [cgroupRoot + "/memory" + (v1Path == "/" ? "" : v1Path), cgroupRoot + "/memory"] {
            guard let max = readFile(directory + "/memory.limit_in_bytes") else { continue }
            result.cgroupDirectory = directory
            result.max = parseLimit(max, physicalMemory: physicalMemory)
            return result
        }
        return result
    }

    /// A limit file's value: bytes, or nil for `max`, an unlimited v1
    /// value (at or above physical memory), or anything unreadable.
    static func parseLimit(_ text: String, physicalMemory: Int) -> Int? {
        let trimmed = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.map(String.init) ?? ""
        guard trimmed != "max", let value = Int(trimmed), value > 0, value < physicalMemory else { return nil }
        return value
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            bytes += buffer[0..<n]
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    /// `cgroup max 512 MiB, high none, physical 16384 MiB (/sys/fs/cgroup)`.
    public var description: String {
        func mib(_ v: Int?) -> String { v.map { "\($0 >> 20) MiB" } ?? "none" }
        return "cgroup max \(mib(max)), high \(mib(high)), physical \(mib(physicalMemory))"
            + (cgroupDirectory.map { " (\($0))" } ?? " (no memory cgroup)")
    }
}

extension MemoryConfiguration {
    /// A configuration sized for `container`: the capacity is the machine's
    /// physical memory (the arena is lazy, so this costs nothing), and the
    /// process limit (R11) is the container's budget — the lower of its
    /// `memory.high` and `memory.max` — so that swift-mm reclaims its caches
    /// before the kernel's cgroup OOM killer would act. Capacity is clamped
    /// to `minimumCapacity…maximumCapacity`.
    /// - Parameter container: the limits to size for.
    /// - Returns: the configuration.
    public static func sized(for container: ContainerMemory) -> MemoryConfiguration {
        let capacity = Swift.min(maximumCapacity, Swift.max(minimumCapacity, container.physicalMemory))
        var configuration = MemoryConfiguration(capacity: capacity)
        let budget = container.budget
        if budget < capacity { configuration.limit = budget }
        return configuration
    }
}
