// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Milliseconds of `CLOCK_MONOTONIC` since the clock was made, as a 32-bit
/// tick that wraps after 49 days (only differences are used): the age of
/// free blocks for release. Kernel analogue: `jiffies`.
struct MillisecondClock: Sendable {
    private let start: timespec

    init() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        start = now
    }

    /// Milliseconds since `init`.
    var now: UInt32 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1_000_000
        return UInt32(truncatingIfNeeded: ms)
    }
}
