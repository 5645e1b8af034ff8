// SPDX-License-Identifier: Apache-2.0

/// What happens when the OOM handler finds no victim it may kill.
public enum OOMPolicy: Sendable, Hashable {
    /// Fallible requests fail; guaranteed requests keep waiting and reporting.
    case failRequests
    /// Stop the process with a full report. Kernel analogue: the "System is
    /// deadlocked on memory" panic.
    case abort
}
