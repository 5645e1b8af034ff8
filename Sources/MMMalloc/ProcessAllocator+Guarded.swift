// SPDX-License-Identifier: Apache-2.0
import CMMMalloc
import CMMShims
import Glibc
@_spi(ProcessAllocator) import MM

/// `MM_HARDENING=full`: every allocation of the process is guarded, on
/// swift-mm's ordinary fast paths (no locked debug path, no mapping per
/// allocation), so the mode costs time in proportion to the bytes allocated.
///
/// Layout of a guarded allocation of `size` bytes inside the block swift-mm
/// gives it (`offset` is 16, or the alignment when that is larger):
///
///     block                      user = block + offset
///     | ... | header | guard word | size bytes        | 16-byte red zone |
///             user-16  user-8                           user+size
///
/// - `header`: `secret ^ user ^ (size << 32 | tag << 8 | log2(offset) << 1 | freed)`
///   with 24 bits of the secret as `tag`, so that an interior or forged
///   pointer, or a header overwritten by an underflow, does not decode.
/// - `guard word` (0xbb…): an underflow of 1–8 bytes changes it.
/// - The red zone (0xbb): an overflow into it, by one byte or more.
///
/// Checked at `free`, which then fills the allocation with 0x6b (its data is
/// gone, zero-on-free in effect) and marks its header freed: another `free`
/// of it is a double free. Above 64 KiB only the allocation's bytes in two
/// pages are filled: the page of its header and the page of its red zone,
/// which the allocation itself wrote, so the fill never faults in a page the
/// program did not touch (a freed 4 MiB buffer of which a program used the
/// first kilobyte costs neither a pass over 4 MiB nor a page fault). Freed
/// allocations up to 64 KiB wait in the thread's quarantine (the last 64)
/// before swift-mm gets them back, and leave it only if their 0x6b are
/// intact: a write after free is caught when it leaves, at the latest when
/// the thread or the process exits.
/// Kernel analogue: SLUB's red zones and poisoning (`slub_debug=ZP`) and
/// KASAN's quarantine, done above the allocator.
enum GuardedAllocation {
    // Everything here is read on the allocation path: C globals and computed
    // constants, never a Swift global with a lazy initialiser.

    /// Set once, before the process system is published (`MM_HARDENING=full`).
    static var isOn: Bool {
        @inline(__always) get { cmm_guarded_is_on() != 0 }
    }
    /// The key of headers (random per process).
    static var secret: UInt {
        @inline(__always) get { UInt(cmm_guarded_key()) }
    }
    /// Turns guarding on with a key (before the process system is published).
    static func turnOn(secret: UInt) {
        cmm_guarded_turn_on(CUnsignedLong(secret))
    }

    static var headerBytes: Int { 16 }
    static var redZoneBytes: Int { 16 }
    static var redZoneByte: UInt8 { 0xbb }
    static var poisonByte: UInt8 { 0x6b }
    /// Eight red-zone bytes: the guard word before an allocation, and the
    /// red zone after it is two of them (`redZoneBytes` is 16).
    static var guardWord: UInt { UInt(redZoneByte) &* 0x0101_0101_0101_0101 }
    /// Sizes from this up do not fit a header.
    static var largestSize: Int { 1 << 32 }
    /// Allocations up to this size are poisoned whole and quarantined when
    /// freed; larger ones are poisoned in the pages of their header and red
    /// zone (`poisonedEdges`) and go back at once.
    static var wholePoisonBytes: Int { 64 << 10 }
    static var pageBytes: Int { 4096 }

    /// The ranges of a large allocation of `size` bytes at `address` that its
    /// free fills with poison: from its start to the end of the header's page,
    /// and from the start of the page holding its last byte to its end —
    /// pages that the header and the red zone made resident when it was
    /// allocated (the two ranges meet when the allocation spans two pages).
    @inline(__always)
    static func poisonedEdges(_ address: UInt, size: Int) -> (head: Int, tailStart: Int) {
        let head = min(size, pageBytes - Int(address & UInt(pageBytes - 1)))
        let lastPage = Int((address + UInt(size) - 1) & ~UInt(pageBytes - 1)) - Int(address)
        return (head, max(head, lastPage))
    }

    @inline(__always)
    static func encode(_ address: UInt, size: Int, offsetShift: Int, freed: Bool) -> UInt {
        secret ^ address ^ (UInt(size) << 32 | (secret >> 40) << 8 | UInt(offsetShift) << 1 | (freed ? 1 : 0))
    }

    /// The fields of the header of the allocation at `address`, nil if it does not decode.
    @inline(__always)
    static func decode(_ word: UInt, at address: UInt) -> (size: Int, offsetShift: Int, freed: Bool)? {
        let plain = word ^ secret ^ address
        let shift = Int((plain >> 1) & 0x7f)
        guard (plain >> 8) & 0xff_ffff == secret >> 40, shift >= 4 && shift <= 22 else { return nil }
        return (Int(plain >> 32), shift, plain & 1 != 0)
    }

    /// The offset of the first byte in `count` bytes at `start` that is not
    /// `byte`, or nil: eight bytes at a time.
    @inline(__always)
    static func firstMismatch(_ byte: UInt8, _ start: UnsafeRawPointer, count: Int) -> Int? {
        let pattern = UInt64(byte) &* 0x0101_0101_0101_0101
        var i = 0
        while i + 8 <= count {
            if start.loadUnaligned(fromByteOffset: i, as: UInt64.self) != pattern { break }
            i += 8
        }
        while i < count {
            if start.load(fromByteOffset: i, as: UInt8.self) != byte { return i }
            i += 1
        }
        return nil
    }

    /// A guarded allocation of `size` bytes aligned to `alignment` (a power
    /// of two), zeroed if asked; nil if swift-mm has no memory for it (or the
    /// size does not fit a header: 4 GiB and more).
    static func allocate(_ mm: MemorySystem, size: Int, alignment: Int, zeroed: Bool,
                         block allocateBlock: (MemorySystem, _ alignment: Int, _ bytes: Int) -> UnsafeMutableRawPointer?)
        -> UnsafeMutableRawPointer? {
        let offset = max(headerBytes, alignment)
        guard size >= 0, size < largestSize - offset - redZoneBytes,
              let block = allocateBlock(mm, alignment, offset + size + redZoneBytes) else { return nil }
        return arm(block, offset: offset, size: size, zeroed: zeroed)
    }

    /// `malloc`'s guarded allocation from the calling thread's magazine
    /// alone (no lock, no re-entrancy mark): nil on a miss, or when the
    /// guarded size is beyond the kmalloc classes.
    @inline(__always)
    static func allocateFromMagazine(_ fastPath: _MagazineFastPath, size: Int) -> UnsafeMutableRawPointer? {
        guard size >= 0, size <= MemorySystem.kmallocMaxSize - headerBytes - redZoneBytes,
              let block = fastPath.allocate(byteCount: headerBytes + size + redZoneBytes, slot: .ordinary) else { return nil }
        return arm(block, offset: headerBytes, size: size, zeroed: false)
    }

    /// Writes the header, guard word and red zone of a guarded allocation
    /// of `size` bytes at `block + offset`; returns the user pointer.
    @inline(__always)
    static func arm(_ block: UnsafeMutableRawPointer, offset: Int, size: Int, zeroed: Bool) -> UnsafeMutableRawPointer {
        let user = block + offset
        (user - 16).storeBytes(of: encode(UInt(bitPattern: user), size: size, offsetShift: offset.trailingZeroBitCount,
                                          freed: false), as: UInt.self)
        (user - 8).storeBytes(of: guardWord, as: UInt.self)
        (user + size).storeBytes(of: guardWord, as: UInt.self)      // the red zone, unaligned
        (user + size + 8).storeBytes(of: guardWord, as: UInt.self)
        if zeroed { user.initializeMemory(as: UInt8.self, repeating: 0, count: size) }
        return user
    }

    /// The requested size of a live guarded allocation (what `malloc_usable_size` answers), or nil.
    static func size(of user: UnsafeMutableRawPointer) -> Int? {
        let address = UInt(bitPattern: user)
        guard address & 15 == 0, let h = decode((user - 16).load(as: UInt.self), at: address), !h.freed else { return nil }
        return h.size
    }

    /// Frees a guarded allocation: checks it, poisons it, and quarantines it
    /// (or gives its block back); reports (and under `trap` stops at)
    /// anything wrong, and frees nothing when the pointer is not a live
    /// guarded allocation.
    static func free(_ mm: MemorySystem, _ user: UnsafeMutableRawPointer, operation: String) {
        let address = UInt(bitPattern: user)
        guard address & 15 == 0 else {
            mm._reportHardeningViolation(.misalignedPointer, operation: operation, pointer: user,
                                         detail: "not aligned to 16: no guarded allocation starts here")
            return
        }
        guard let header = decode((user - 16).load(as: UInt.self), at: address) else {
            mm._reportHardeningViolation(
                .redZoneOverwritten, operation: operation, pointer: user,
                detail: "the header in the 16 bytes before the pointer does not decode: something wrote before the start of the allocation (an underflow), or this is not the start of an allocation")
            return
        }
        if header.freed {
            mm._reportHardeningViolation(.doubleFree, operation: operation, pointer: user,
                                         detail: "this \(header.size)-byte allocation was already freed")
            return
        }
        if (user - 8).load(as: UInt.self) != guardWord {
            mm._reportHardeningViolation(
                .redZoneOverwritten, operation: operation, pointer: user,
                detail: "the guard word in the 8 bytes before this \(header.size)-byte allocation was overwritten: something wrote before its start (an underflow)")
        }
        if let bad = firstMismatch(redZoneByte, user + header.size, count: redZoneBytes) {
            mm._reportHardeningViolation(
                .redZoneOverwritten, operation: operation, pointer: user,
                detail: "byte \(header.size + bad) of this \(header.size)-byte allocation (its red zone) is 0x\(String((user + header.size).load(fromByteOffset: bad, as: UInt8.self), radix: 16)), not 0xbb: something wrote past its end (an overflow)")
        }
        // Under `report` the allocation is still freed: its header said where its block starts.
        (user - 16).storeBytes(of: encode(address, size: header.size, offsetShift: header.offsetShift, freed: true), as: UInt.self)
        let block = user - (1 << header.offsetShift)
        guard header.size <= wholePoisonBytes else {
            let edges = poisonedEdges(address, size: header.size)
            user.initializeMemory(as: UInt8.self, repeating: poisonByte, count: edges.head)
            (user + edges.tailStart).initializeMemory(as: UInt8.self, repeating: poisonByte, count: header.size - edges.tailStart)
            mm.deallocate(block)
            return
        }
        user.initializeMemory(as: UInt8.self, repeating: poisonByte, count: header.size)
        let quarantine: UnsafeMutablePointer<cmm_quarantine> = cmm_quarantine_get()
        if quarantine.pointee.registered == 0 { cmm_quarantine_arm_thread_exit() }
        let slot = Int(quarantine.pointee.next % UInt(CMM_QUARANTINE_SLOTS))
        quarantine.pointee.next &+= 1
        let evicted = withUnsafeMutablePointer(to: &quarantine.pointee.slots) { slots in
            slots.withMemoryRebound(to: UnsafeMutableRawPointer?.self, capacity: Int(CMM_QUARANTINE_SLOTS)) { slots in
                defer { slots[slot] = user }
                return slots[slot]
            }
        }
        if let evicted { retire(mm, evicted) }
    }

    /// The offset of the first byte in `count` bytes at `start` that is not
    /// the poison, or nil: compared with `memcmp` a page at a time.
    @inline(__always)
    static func firstUnpoisoned(_ start: UnsafeRawPointer, count: Int) -> Int? {
        var done = 0
        while done < count {
            let chunk = min(4096, count - done)
            if memcmp(start + done, cmm_poison(), chunk) != 0 {
                return done + firstMismatch(poisonByte, start + done, count: chunk)!
            }
            done += chunk
        }
        return nil
    }

    /// Gives a quarantined allocation's block back to swift-mm, after
    /// checking that nothing wrote to it since it was freed.
    static func retire(_ mm: MemorySystem, _ user: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: user)
        guard let header = decode((user - 16).load(as: UInt.self), at: address), header.freed else {
            mm._reportHardeningViolation(
                .writeAfterFree, operation: "quarantine", pointer: user,
                detail: "the header of this freed allocation was overwritten after it was freed; its block stays allocated")
            return
        }
        if let bad = firstUnpoisoned(user, count: header.size) {
            mm._reportHardeningViolation(
                .writeAfterFree, operation: "quarantine", pointer: user + bad,
                detail: "byte \(bad) of this freed \(header.size)-byte allocation is 0x\(String(user.load(fromByteOffset: bad, as: UInt8.self), radix: 16)), not the poison 0x6b: it was written after it was freed")
        }
        giveBack(mm, user - (1 << header.offsetShift))
    }

    /// Returns a guarded allocation's block to swift-mm: a push onto the
    /// thread's magazine when it is a kmalloc object and there is room.
    @inline(__always)
    static func giveBack(_ mm: MemorySystem, _ block: UnsafeMutableRawPointer) {
        // The caller is inside the allocator (its malloc slot closed) and holds no allocator lock.
        if cmm_thread_slots_get().pointee.forkGateDepth == 0, let fastPath = ProcessAllocator.existingFastPath,
           fastPath.free(block, slot: .ordinary) { return }
        mm.deallocate(block)
    }

    /// Checks and gives back every allocation in the calling thread's quarantine.
    static func flushQuarantine(_ mm: MemorySystem) {
        let quarantine: UnsafeMutablePointer<cmm_quarantine> = cmm_quarantine_get()
        withUnsafeMutablePointer(to: &quarantine.pointee.slots) { slots in
            slots.withMemoryRebound(to: UnsafeMutableRawPointer?.self, capacity: Int(CMM_QUARANTINE_SLOTS)) { slots in
                for i in 0..<Int(CMM_QUARANTINE_SLOTS) {
                    if let user = slots[i] {
                        slots[i] = nil
                        retire(mm, user)
                    }
                }
            }
        }
    }
}
