#!/usr/bin/env bash
# Single-node SLURM on 127.0.0.1 for tests and CI (Debian 12, run as root, no systemd needed).
#
#   bash tools/slurm_local.sh install   # apt-get the Debian packages (slurm 22.05, munge, slurmdbd, mariadb)
#   bash tools/slurm_local.sh start     # install when missing, then start munge, mariadb+slurmdbd, slurmctld, slurmd
#   bash tools/slurm_local.sh status    # which daemons run (by pidfile) and what sinfo says; exit 0 only when all run
#   bash tools/slurm_local.sh stop      # stop every daemon it started, by the PID in its pidfile (never by name)
#
# Idempotent: `start` leaves running daemons alone, `stop` ignores daemons that are not running.
# Environment: WITH_ACCT=1 (default) runs slurmdbd+MariaDB so sacct works (submitit needs sacct to notice a hard-killed
# job); WITH_ACCT=0 skips accounting. FAKE_GPUS=2 (default) registers that many fake GPUs (character devices made with
# mknod under /var/lib/fakegpu) so gpus_per_node requests schedule. SLURM_LOCAL_LOG=/var/log/slurm.
set -euo pipefail

WITH_ACCT=${WITH_ACCT:-1}
FAKE_GPUS=${FAKE_GPUS:-2}
LOG_DIR=${SLURM_LOCAL_LOG:-/var/log/slurm}
CONF_DIR=/etc/slurm
CLUSTER=ci

PID_MUNGE=/run/munge/munged.pid
PID_MYSQL=/run/mysqld/mysqld.pid
PID_DBD=/run/slurmdbd.pid
PID_CTLD=/run/slurmctld.pid
PID_SLURMD=/run/slurmd.pid

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"; }

pid_alive() {  # pidfile -> 0 when the process it names is alive
    local f=$1 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_for() {  # seconds description command...
    local n=$1 what=$2; shift 2
    for _ in $(seq "$n"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    die "$what did not come up within ${n}s (logs in $LOG_DIR)"
}

installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null \
        && { [ "$WITH_ACCT" != 1 ] || { command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; }; }
}

do_install() {
    need_root
    if installed; then say "packages already installed"; return 0; fi
    export DEBIAN_FRONTEND=noninteractive
    # keep package postinst scripts from starting daemons (we start them ourselves, by hand)
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    local pkgs="slurmctld slurmd slurm-client munge"
    [ "$WITH_ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
    say "apt-get install $pkgs"
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    installed || die "packages did not install"
}

write_slurm_conf() {
    local host=$1 ncpu mem acct
    ncpu=$(nproc)
    mem=$(awk '/MemTotal/{print int($2/1024*0.8)}' /proc/meminfo)
    if [ "$WITH_ACCT" = 1 ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux"
    else
        acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    fi
    local gres_node="" gres_types=""
    if [ "$FAKE_GPUS" -gt 0 ]; then
        gres_node="Gres=gpu:$FAKE_GPUS"
        gres_types="GresTypes=gpu"
    fi
    cat >"$CONF_DIR/slurm.conf" <<EOF
# written by tools/slurm_local.sh
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$PID_CTLD
SlurmdPidFile=$PID_SLURMD
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
$gres_types
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if [ "$FAKE_GPUS" -gt 0 ]; then
        mkdir -p /var/lib/fakegpu
        local i last=$((FAKE_GPUS - 1))
        for i in $(seq 0 "$last"); do
            [ -e /var/lib/fakegpu/nvidia$i ] || mknod /var/lib/fakegpu/nvidia$i c 1 3
        done
        echo "NodeName=$host Name=gpu File=/var/lib/fakegpu/nvidia[0-$last]" >"$CONF_DIR/gres.conf"
    else
        rm -f "$CONF_DIR/gres.conf"
    fi
}

start_munge() {
    if pid_alive $PID_MUNGE; then say "munged already running"; return 0; fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=$PID_MUNGE --force"
    wait_for 15 munged sh -c 'munge -n | unmunge'
}

start_accounting() {
    if ! pid_alive $PID_MYSQL; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        /usr/sbin/mariadbd --user=mysql --socket=/run/mysqld/mysqld.sock --pid-file=$PID_MYSQL \
            --bind-address=127.0.0.1 >"$LOG_DIR/mariadb.log" 2>&1 &
        wait_for 60 mariadb mysqladmin ping
    else
        say "mariadb already running"
    fi
    mysql -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
        CREATE DATABASE IF NOT EXISTS slurm_acct_db; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        FLUSH PRIVILEGES;"
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$PID_DBD
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
    if pid_alive $PID_DBD; then say "slurmdbd already running"; return 0; fi
    /usr/sbin/slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster $CLUSTER >/dev/null 2>&1 || true
}

node_idle() { sinfo -h -o %T | grep -Eqx 'idle|mixed|allocated'; }

do_start() {
    need_root
    installed || do_install
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" "$CONF_DIR"
    local host
    host=$(hostname -s)
    # MASTER_ADDR for torch.distributed is the node's hostname: it must resolve
    getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >>/etc/hosts
    start_munge
    # slurm.conf first: sacctmgr (used to wait for slurmdbd) reads it too
    if ! pid_alive $PID_CTLD || ! pid_alive $PID_SLURMD; then
        write_slurm_conf "$host"
    fi
    if [ "$WITH_ACCT" = 1 ]; then start_accounting; fi
    if pid_alive $PID_CTLD; then say "slurmctld already running"; else /usr/sbin/slurmctld; fi
    wait_for 30 slurmctld scontrol ping
    if pid_alive $PID_SLURMD; then say "slurmd already running"; else /usr/sbin/slurmd; fi
    wait_for 60 "node $host" node_idle
    if [ "$WITH_ACCT" = 1 ]; then
        sacctmgr -i add account default >/dev/null 2>&1 || true
        sacctmgr -i add user root account=default >/dev/null 2>&1 || true
    fi
    say "up: $(sinfo -h -o '%P %D %T %c cpus %G')"
}

stop_pidfile() {  # name pidfile
    local name=$1 f=$2 pid
    if ! pid_alive "$f"; then rm -f "$f"; return 0; fi
    pid=$(tr -dc '0-9' <"$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name ($pid) still running after 30s, sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
    say "stopped $name ($pid)"
}

do_stop() {
    need_root
    # reverse start order; all by pidfile
    stop_pidfile slurmd $PID_SLURMD
    stop_pidfile slurmctld $PID_CTLD
    stop_pidfile slurmdbd $PID_DBD
    stop_pidfile mariadb $PID_MYSQL
    stop_pidfile munged $PID_MUNGE
}

do_status() {
    local ok=0 pair name f
    for pair in munged:$PID_MUNGE mariadb:$PID_MYSQL slurmdbd:$PID_DBD slurmctld:$PID_CTLD slurmd:$PID_SLURMD; do
        name=${pair%%:*}; f=${pair#*:}
        if pid_alive "$f"; then
            echo "$name running (pid $(tr -dc '0-9' <"$f"))"
        else
            echo "$name stopped"
            case $name in mariadb|slurmdbd) [ "$WITH_ACCT" = 1 ] && ok=1 ;; *) ok=1 ;; esac
        fi
    done
    if command -v sinfo >/dev/null && pid_alive $PID_CTLD; then sinfo || true; fi
    return $ok
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    restart) do_stop; do_start ;;
    *) echo "usage: $0 install|start|stop|status|restart" >&2; exit 2 ;;
esac
