#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
ln -s /run /var/run
# What `ip netns exec` binds /etc/netns/NS/resolv.conf over (the glibc resolver's scenario), and the user
# dnsmasq runs as (`--user=root`).
mkdir -p /etc
: > /etc/resolv.conf
echo 'root:x:0:0:root:/:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
ip link set lo up
# `clock NAME`: how long the VM has been up, for the timing table.
clock() { echo "@@udptrace-vm clock $1 $(cut -d' ' -f1 /proc/uptime)"; }
clock init
for module in $(cat /lib/modules/order); do
  insmod "/lib/modules/$module.ko" || echo "@@udptrace-vm warning: $module did not load"
done
echo "@@udptrace-vm kernel $(uname -r)"
echo "@@udptrace-vm version $(cat /proc/version)"
# The binary the package holds, of this VM's architecture: that it runs here at all.
echo "@@udptrace-vm udptrace-version $(udptrace --version 2>&1 | head -1)"
clock modules
# What to run, from the kernel command line (xtask's `Job::append`), one VM per mode of a kernel and one for
# its benchmark, so that the lanes share out the work evenly:
# - `udptrace.probes=1`: `udptrace probes -v` first (one VM of each kernel, for docs/kernels.md's table);
# - `udptrace.modes=fentry,kprobe`: the suite in these modes (none without it);
# - `udptrace.only=NAME`: only these scenarios (`cargo xtask vm-test --only`);
# - `udptrace.check=1`: the `udptrace check` scenarios too;
# - `udptrace.flood=1`: the flood too, in fentry and kprobe mode;
# - `udptrace.narrowed=1` (`--mode`, `--only`): a second udptrace prints its text lines and kernel stacks (-v)
#   beside the suite, and what bpftool says of the programs (a full run has none: on one emulated CPU it took
#   time from every scenario, and nothing read what it printed);
# - `udptrace.bench=smoke` or `udptrace.bench=ROUNDS,SECONDS`: the benchmark.
if grep -q "udptrace.probes=1" /proc/cmdline; then
  udptrace probes -v 2>&1 | sed 's/^/@@udptrace-vm probes /'
fi
clock probes
modes=$(sed -n 's/.*udptrace\.modes=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
only=$(sed -n 's/.*udptrace\.only=\([^ ]*\).*/\1/p' /proc/cmdline)
narrow=
[ -n "$only" ] && narrow="--only $only"
narrowed=
grep -q "udptrace.narrowed=1" /proc/cmdline && narrowed=1
for mode in $modes; do
  require=--require-attach
  [ "$mode" = tracepoint ] && require=
  # kprobe mode reads the per-CPU perf buffers, the other modes the ring buffer: both on every kernel.
  buffer=ring
  [ "$mode" = kprobe ] && buffer=perf
  echo "@@udptrace-vm begin $mode ($buffer buffer)"
  clock "begin-$mode"
  # In a narrowed run a second udptrace prints its text lines beside the suite.
  demo=
  if [ -n "$narrowed" ]; then
    udptrace --probe "$mode" -v >/tmp/demo 2>&1 &
    demo=$!
    tries=0
    while ! grep -q "udptrace: tracing" /tmp/demo && [ $tries -lt 120 ]; do sleep 1; tries=$((tries + 1)); done
    clock "demo-$mode"
  fi
  # udptrace check loads the programs for each run: its scenarios run in the fentry run of the oldest and
  # newest kernels (`udptrace.check=1`, xtask's `Plan::checks_on`).
  check=
  grep -q "udptrace.check=1" /proc/cmdline && check=--with-check
  # What one run of a kernel proves for the others, left out of them (each a minute or so of emulation):
  # the owner records are the cgroup programs', the same in every mode, so the fentry run checks them; the
  # helper's death is user space's, the same in every mode too, so the fentry run kills it (two starts of
  # udptrace; sigkill_unloads still unloads each mode's programs), and so are --pcap's stream and rotation
  # (pcap_file still reads each mode's packets); the flood's tracepoint programs are this
  # host's suite's too, with both buffers, and here fentry floods the ring buffer and kprobe the perf
  # buffers.
  set --
  if [ "$mode" != fentry ]; then
    set -- "$@" --except "owner_records_full=the owner records are the cgroup programs', the same in every mode: the fentry run of this kernel checks them"
    set -- "$@" --except "helper_killed=the helper and the tracer without it are user space's, the same in every mode: the fentry run of this kernel kills it"
    set -- "$@" --except "pcap_stdout=--pcap -'s stream is user space's, the same in every mode: the fentry run of this kernel pipes it"
    set -- "$@" --except "pcap_rotation=--pcap's rotation is user space's, the same in every mode: the fentry run of this kernel rotates"
  fi
  # The metrics' bounds under a flood of hostile DNS are user space's, the same on every kernel: the host's
  # suite floods them. Tracepoint mode's socket errors carry no DNS, so no sentence names whose query a
  # hostile name asked: the host's suite checks that mode's text and summary.
  set -- "$@" --except "hostile_flood=the metrics' bounds are user space's, the same on every kernel: the host's suite floods them"
  set -- "$@" --except "syscall_filter=the image has no strace: the host's suite traces the calls, and the table lists fentry's and kprobe's attach calls (bpf, perf_event_open) from the code"
  if [ "$mode" = tracepoint ]; then
    set -- "$@" --except "hostile_names=tracepoint mode's socket errors carry no DNS question to name: the host's suite checks this mode's text and summary"
    set -- "$@" --except "flood=the flood's tracepoint programs run on the host's suite with both buffers; here the fentry run floods the ring buffer and the kprobe run the perf buffers"
  elif ! grep -q "udptrace.flood=1" /proc/cmdline; then
    # What the flood adds to the suite (each buffer's losses counted under load) is the same between the
    # oldest and newest kernels, which flood both buffers (`udptrace.flood=1`, xtask's `Plan::flood_on`).
    set -- "$@" --except "flood=the oldest and newest kernels' fentry and kprobe runs flood the ring and perf buffers; the programs flooded are the suite's on every kernel"
  fi
  udptrace-scenarios --udptrace /usr/bin/udptrace --probe "$mode" --buffer $buffer --event-timeout 30 \
    $require $check $narrow "$@"
  echo "@@udptrace-vm end $mode rc=$?"
  clock "suite-$mode"
  if [ -n "$demo" ]; then
    # What the kernel says of the programs and links, misses included, while the demo still holds them.
    bpftool prog show 2>&1 | sed 's/^/@@udptrace-vm demo bpftool /'
    bpftool link show 2>&1 | sed 's/^/@@udptrace-vm demo bpftool /'
    kill -INT $demo; wait $demo
    sed 's/^/@@udptrace-vm demo /' /tmp/demo
  fi
  clock "end-$mode"
done
# The benchmark: `udptrace.bench=smoke` (a short run that checks itself) or `udptrace.bench=ROUNDS,SECONDS`.
# The flood over many flows is left to the host: here each of its variants would cost a start of udptrace.
bench=$(sed -n 's/.*udptrace\.bench=\([^ ]*\).*/\1/p' /proc/cmdline)
case "$bench" in
  smoke) args="--smoke --paths hot,errors,drops" ;;
  *,*) args="--rounds ${bench%,*} --seconds ${bench#*,} --paths hot,errors,drops" ;;
  *) args= ;;
esac
if [ -n "$args" ]; then
  echo "@@udptrace-vm begin bench"
  clock bench
  udptrace-bench --udptrace /usr/bin/udptrace $args 2>&1 | sed 's/^/@@udptrace-vm bench /'
fi
clock done
echo "@@udptrace-vm done"
poweroff -f
