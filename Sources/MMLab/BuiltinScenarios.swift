// SPDX-License-Identifier: Apache-2.0

/// Scenarios compiled into the binary: `mmctl scenarios` lists them,
/// `mmctl scenarios show NAME` prints one to copy and edit.
public enum BuiltinScenarios {
    /// Name and YAML text, the flagship first.
    public static let all: [(name: String, yaml: String)] = [
        ("transaction-commit", transactionCommit),
        ("cache-pressure", cachePressure),
        ("tenant-kill", tenantKill),
        ("tenants-with-limits", tenantsWithLimits),
        ("container-pressure", containerPressure),
        ("reserves-starvation", reservesStarvation),
        ("retry-loop-production", retryLoopProduction),
        ("kvmalloc-nofs", kvmallocNofs),
        ("nofail-scope-library", nofailScopeLibrary),
        ("commit-no-direct-reclaim", commitNoDirectReclaim),
        ("scope-finder", scopeFinder),
        ("oom-victim-exit", oomVictimExit),
    ]

    /// The YAML of the built-in scenario `name`.
    public static func yaml(named name: String) -> String? { all.first { $0.name == name }?.yaml }

    static let transactionCommit = """
    # The __GFP_NOFAIL debate, played out. Filesystem transactions hold the journal lock
    # inside an excluding(filesystem) scope (memalloc_nofs_save) and allocate kvmalloc-sized
    # buffers that must not fail. An inode cache fills the arena; its shrinker belongs to the
    # filesystem domain and takes the journal lock. A network thread makes atomic allocations.
    name: transaction-commit
    description: >-
      Transactions hold the journal lock in a NOFS scope and allocate buffers that must not
      fail, while the only reclaimable memory sits behind a shrinker that needs the journal
      lock: retryForever vs useReserves (the kernel's NOFAIL) vs a caller retry loop.
    seed: 2021
    duration: 6s
    progress: transactions
    watchdog: 2s
    semantics: [retryForever, useReserves, retryLoop]
    arena:
      capacity: 64MiB
      watermarks: {min: 4MiB, low: 5MiB, high: 6MiB}
      stallReportInterval: 500ms
    locks:
      - name: journal
    caches:
      - name: inode-cache
        objectSize: 4KiB
        count: 14000
        domain: filesystem
        lock: journal
    workers:
      - name: fs-transaction
        threads: 2
        operations:
          - size: 128KiB..512KiB
            count: 4
            placement: automatic
            guarantee: semantics
            scopes: [excluding filesystem]
            locks: [journal]
            hold: 20ms
            transaction: true
      - name: inode-lookup
        operations:
          - size: 4KiB
            count: 32
            grow: inode-cache
            rate: 4000
      - name: network
        operations:
          - size: 256..2KiB
            policy: atomic
            rate: 5000
    """

    static let cachePressure = """
    # A web cache that its shrinker trims under pressure: request buffers are fallible
    # (failFast) and a pressure spike takes a third of the arena for a second.
    name: cache-pressure
    description: >-
      A shrinkable web cache, fallible request buffers and a one-second pressure spike:
      how reclaim keeps requests served and how much cache it costs.
    seed: 7
    duration: 4s
    progress: requests
    arena:
      capacity: 32MiB
    caches:
      - name: web-cache
        objectSize: 2KiB
        count: 12000
    workers:
      - name: requests
        threads: 2
        operations:
          - size: 512..16KiB
            count: 4
            policy: failFast
            hold: 1ms
            transaction: true
      - name: cache-fill
        operations:
          - size: 2KiB
            grow: web-cache
            rate: 4000
    events:
      - at: 1.5s
        action: pressure-spike
        bytes: 12MiB
        duration: 1s
    """

    static let tenantKill = """
    # Two tenants' caches charged to their groups; one tenant is killed at 2 s and its
    # memory comes back at once.
    name: tenant-kill
    description: >-
      Two tenants with caches charged to their groups; tenant b is killed halfway and
      everything charged to it is freed.
    seed: 99
    duration: 4s
    progress: requests
    arena:
      capacity: 32MiB
    groups:
      - name: a
      - name: b
        oomScoreAdjust: 500
    caches:
      - name: a-cache
        objectSize: 4KiB
        count: 3000
        group: a
      - name: b-cache
        objectSize: 4KiB
        count: 3000
        group: b
    workers:
      - name: a-requests
        operations:
          - size: 4KiB..32KiB
            count: 2
            policy: standard
            transaction: true
            rate: 500
    events:
      - at: 2s
        action: kill-group
        group: b
    """

    static let tenantsWithLimits = """
    # Three tenants share one arena (rules R8-R10). a is throttled above high and capped by
    # max; b is capped by max; c is protected by low. At 1.5 s a global spike needs memory
    # that only the tenants' caches can give; at 3 s tenant b itself spikes into its max.
    name: tenants-with-limits
    description: >-
      Tenant a throttled above high, tenants a and b capped by max, tenant c protected by
      low: a global spike reclaims from a and b but not from c, and b's own spike stops at
      b's max and sheds b's cache, not its neighbours'.
    seed: 14
    duration: 5s
    progress: requests
    arena:
      capacity: 64MiB
    groups:
      - name: a
        high: 13MiB
        max: 16MiB
      - name: b
        max: 16MiB
      - name: c
        low: 12MiB
    caches:
      - name: a-cache
        objectSize: 4KiB
        count: 3000
        group: a
      - name: b-cache
        objectSize: 4KiB
        count: 2500
        group: b
      - name: c-cache
        objectSize: 4KiB
        count: 2500
        group: c
    workers:
      - name: a-requests
        operations:
          - size: 4KiB..32KiB
            count: 2
            policy: standard
            group: a
            transaction: true
            rate: 400
          - size: 4KiB
            grow: a-cache
            rate: 500
      - name: b-requests
        operations:
          - size: 4KiB..32KiB
            count: 2
            policy: failFast
            group: b
            transaction: true
            rate: 400
    events:
      - at: 1.5s
        action: pressure-spike
        bytes: 40MiB
        duration: 1s
      - at: 3s
        action: pressure-spike
        bytes: 24MiB
        duration: 1s
        group: b
    """

    static let containerPressure = """
    # A service inside a container follows the machine's pressure: simulated PSI events at
    # 1 s to 2.5 s each lower its limit by 10 % (floor 24 MiB), its cache shrinks and the
    # memory goes back to the OS; once the pressure stops, the limit relaxes step by step.
    name: container-pressure
    description: >-
      A service with a page cache follows simulated PSI pressure: each event lowers the
      limit 10 %, the cache shrinks and memory returns to the OS; then the limit relaxes.
    seed: 3
    duration: 6s
    progress: requests
    arena:
      capacity: 64MiB
      pressureMonitor:
        floor: 24MiB
        step: 0.1
        relaxAfter: 500ms
    caches:
      - name: page-cache
        objectSize: 4KiB
        count: 10000
    workers:
      - name: requests
        threads: 2
        operations:
          - size: 1KiB..16KiB
            count: 4
            policy: failFast
            hold: 1ms
            transaction: true
            rate: 1000
      - name: cache-fill
        operations:
          - size: 4KiB
            grow: page-cache
            rate: 3000
    events:
      - at: 1s
        action: psi-pressure
        duration: 1.5s
    """

    static let reservesStarvation = """
    # Dave Chinner: NOFAIL's "dig into reserves, drive to OOM" is "potentially much more
    # problematic" than retrying. Commits that must not fail run while a transient spike
    # holds memory down to min and nothing is reclaimable; a network path makes atomic
    # allocations throughout.
    name: reserves-starvation
    description: >-
      Must-not-fail commits during a transient spike with nothing reclaimable, beside
      atomic network allocations: retryForever waits the spike out; useReserves keeps
      committing by invoking the OOM handler and spending the reserves.
    seed: 21
    duration: 5s
    progress: commits
    watchdog: 3s
    semantics: [retryForever, useReserves]
    arena:
      capacity: 64MiB
      watermarks: {min: 8MiB, low: 10MiB, high: 12MiB}
      stallReportInterval: 500ms
    workers:
      - name: commit
        threads: 2
        operations:
          - size: 256KiB..1MiB
            count: 4
            placement: automatic
            guarantee: semantics
            hold: 20ms
            transaction: true
      - name: network
        operations:
          - size: 2KiB..16KiB
            count: 8
            policy: atomic
            hold: 2ms
            rate: 500
    events:
      - at: 1s
        action: pressure-spike
        bytes: 64MiB
        duration: 2s
    """

    static let retryLoopProduction = """
    # Dave Chinner: "these subsystems just aren't failing or deadlocking with such loops" in
    # production. The flagship's transactions, but the inode cache can be reclaimed without
    # the journal lock, as a page cache can: every semantics has memory to get.
    name: retry-loop-production
    description: >-
      The flagship's transactions with reclaimable memory outside the locked domain:
      retryForever, useReserves and the caller's retry loop side by side, with latency.
    seed: 2021
    duration: 5s
    progress: transactions
    semantics: [retryForever, useReserves, retryLoop]
    arena:
      capacity: 64MiB
      watermarks: {min: 4MiB, low: 5MiB, high: 6MiB}
      stallReportInterval: 500ms
    locks:
      - name: journal
    caches:
      - name: page-cache
        objectSize: 4KiB
        count: 14000
    workers:
      - name: fs-transaction
        threads: 2
        operations:
          - size: 128KiB..512KiB
            count: 4
            placement: automatic
            guarantee: semantics
            scopes: [excluding filesystem]
            locks: [journal]
            hold: 20ms
            transaction: true
      - name: page-cache-fill
        operations:
          - size: 4KiB
            count: 32
            grow: page-cache
            rate: 4000
      - name: network
        operations:
          - size: 256..2KiB
            policy: atomic
            rate: 5000
    """

    static let kvmallocNofs = """
    # Dave Chinner and Michal Hocko on kvmalloc and GFP_NOFS. The arena is fragmented: plenty
    # of free memory, no free megabyte. A transaction in an excluding(filesystem) scope needs
    # three 1 MiB buffers. swift-mm's kvmalloc falls back to vmalloc in every context; the
    # kernel of 2021, given explicit GFP_NOFS, did not.
    name: kvmalloc-nofs
    description: >-
      1 MiB buffers in an excluding(filesystem) scope on a fragmented arena: swift-mm's
      kvmalloc falls back to vmalloc; under kernel2021 semantics (explicit GFP_NOFS) it
      could only use contiguous pages.
    seed: 4
    duration: 3s
    progress: transactions
    semantics: [retryForever, kernel2021]
    arena:
      capacity: 64MiB
      watermarks: {min: 1MiB, low: 1536KiB, high: 2MiB}
      stallReportInterval: 500ms
    caches:
      - name: inode-cache
        objectSize: 12KiB
        count: 3900
        domain: filesystem
    workers:
      - name: fs-transaction
        operations:
          - size: 1MiB
            count: 3
            placement: automatic
            policy: standard
            scopes: [excluding filesystem]
            hold: 10ms
            transaction: true
            rate: 20
    events:
      - at: 0s
        action: fragment-cache
        cache: inode-cache
    """

    static let nofailScopeLibrary = """
    # Michal Hocko: a NOFAIL scope around library code that "decides to allocate (e.g.
    # printk ... an optimistic NOWAIT allocation)". Requests run inside a retryForever scope
    # and log through a library that makes non-blocking allocations; a spike holds memory
    # down to min for two seconds.
    name: nofail-scope-library
    description: >-
      A logger's optimistic nonBlocking allocations inside a retryForever scope during a
      spike: under rule R3 they fail fast and the requests go on; under a naive "the scope
      upgrades everything" rule they block the requests.
    seed: 5
    duration: 4s
    progress: requests
    watchdog: 3s
    semantics: [retryForever, naiveScope]
    arena:
      capacity: 32MiB
      watermarks: {min: 4MiB, low: 5MiB, high: 6MiB}
      stallReportInterval: 500ms
    workers:
      - name: request
        threads: 2
        operations:
          - size: 16KiB..64KiB
            policy: nonBlocking
            scopes: [retryForever]
            hold: 1ms
            transaction: true
            rate: 1000
    events:
      - at: 1s
        action: pressure-spike
        bytes: 32MiB
        duration: 2s
    """

    static let commitNoDirectReclaim = """
    # Dave Chinner: turn off direct reclaim in the transaction commit path — "direct reclaim
    # that can make no progress is actively harmful". The only cache's shrinker needs a lock
    # that another thread holds for 50 ms at a time, so reclaim from a commit mostly waits on
    # it; memory comes back from a churning worker's frees. Commits with direct reclaim
    # against commits in a noDirectReclaim scope.
    name: commit-no-direct-reclaim
    description: >-
      Commits while the only shrinker waits on a busy lock: retryForever commits that
      reclaim themselves against the same commits in a noDirectReclaim scope, which wait
      for frees and the background reclaimer.
    seed: 6
    duration: 4s
    progress: commits
    semantics: [retryForever, noDirectReclaim]
    arena:
      capacity: 64MiB
      watermarks: {min: 4MiB, low: 5MiB, high: 6MiB}
      stallReportInterval: 500ms
    locks:
      - name: busy
    caches:
      - name: stuck-cache
        objectSize: 4KiB
        count: 14200
        lock: busy
    workers:
      - name: commit
        threads: 2
        operations:
          - size: 128KiB..512KiB
            count: 4
            placement: automatic
            guarantee: semantics
            hold: 5ms
            transaction: true
      - name: lock-holder
        operations:
          - size: 64
            locks: [busy]
            hold: 50ms
      - name: churn
        operations:
          - size: 16KiB..64KiB
            count: 8
            policy: failFast
            hold: 10ms
    """

    static let scopeFinder = """
    # Michal Hocko: the NOFS scope "experiment was much less successful than I hoped ...
    # thousands of direct NOFS users". The reclaim-recursion checker finds, with no memory
    # pressure at all, every operation that holds a lock a shrinker needs without a scope
    # excluding that shrinker's domain; the second run adds exactly those scopes and is clean.
    name: scope-finder
    description: >-
      Five call sites, two of which hold a lock that a shrinker takes without the scope
      that keeps reclaim away from it: the checker names them with no memory pressure, and
      the run with the scopes added is clean.
    seed: 8
    duration: 1s
    semantics: [retryForever, scopesAdded]
    arena:
      capacity: 256MiB
    locks:
      - name: journal
      - name: btree
    caches:
      - name: inode-cache
        objectSize: 4KiB
        count: 100
        domain: filesystem
        lock: journal
      - name: btree-cache
        objectSize: 4KiB
        count: 100
        domain: block-cache
        lock: btree
    workers:
      - name: journal
        operations:
          - size: 4KiB..64KiB
            locks: [journal]
            scopes: [excluding filesystem]
            rate: 200
          - size: 512..4KiB
            locks: [journal]
            rate: 200
      - name: btree
        operations:
          - size: 4KiB..16KiB
            locks: [btree]
            scopes: [excluding filesystem]
            rate: 200
          - size: 64..1KiB
            locks: [btree]
            rate: 200
      - name: request
        operations:
          - size: 1KiB..8KiB
            rate: 200
    """

    static let oomVictimExit = """
    # Michal Hocko: "emergency access to memory reserves helped in OOM situations". An
    # application group fills the arena with memory no shrinker can free; must-not-fail
    # commits invoke the OOM handler, which kills it; to exit, the application must first
    # allocate 2 MiB (flush its log). With the victim's reserve, and without it.
    name: oom-victim-exit
    description: >-
      An OOM-killed application must allocate 2 MiB to exit: with the .oomVictim reserve
      (useReserves) and without it (noVictimReserve), while must-not-fail commits wait.
    seed: 2
    duration: 5s
    progress: commits
    watchdog: 4s
    semantics: [useReserves, noVictimReserve]
    arena:
      capacity: 64MiB
      watermarks: {min: 8MiB, low: 10MiB, high: 12MiB}
      stallReportInterval: 500ms
    groups:
      - name: app
        oomScoreAdjust: 500
        exitAllocation: 2MiB
    caches:
      - name: app-heap
        objectSize: 4KiB
        count: 11000
        group: app
        reclaimable: false
    workers:
      - name: commit
        threads: 2
        operations:
          - size: 256KiB..1MiB
            count: 4
            placement: automatic
            guarantee: semantics
            hold: 20ms
            transaction: true
      - name: app-growth
        operations:
          - size: 4KiB
            count: 16
            grow: app-heap
            policy: failFast
            rate: 4000
    """
}
