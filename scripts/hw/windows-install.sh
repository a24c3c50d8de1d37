# Sourced by scripts/hardware-host.sh: an unattended Windows 11 / Server
# 2025 install from the vendor's ISO through kilnd, as a CI farm would make
# its golden image:
#
#   - the Windows ISO is registered as an `iso` image with `--os-type
#     windows` and `--firmware uefi`, so servers made from it get kilnd's
#     Windows defaults: a TPM 2.0 (swtpm), Secure Boot (the variable store
#     with Microsoft's 2011 and 2023 certificates), the root disk on SATA
#     (AHCI: setup has no virtio driver), the VGA display and the guest
#     agent channel;
#   - the virtio-win ISO is a second CD-ROM: setup loads viostor/vioscsi/
#     NetKVM from it (so `--windows-disk-bus virtio` also works), and the
#     first logon installs its drivers and qemu-guest-agent;
#   - the answer file (`autounattend.xml`, printed by --print-answer-file)
#     reaches setup on kilnd's answer-file CD-ROM (label UNATTEND): it wipes
#     disk 0 (GPT: EFI, MSR, Windows), installs --windows-edition, turns on
#     the serial admin console (EMS/SAC on COM1) and turns off automatic
#     repair, so a headless boot never waits on a screen.
#
# The steps, each timed: ACTIVE; "Press any key to boot from CD" answered
# through `kiln server keys`; SAC on the serial console (Windows' kernel up
# after setup's first reboot); the guest agent answering (`kiln server
# guest`: first logon done); a stop through the agent (guest-shutdown).
# Screenshots go to --shots at each step and every 5 minutes while waiting.

# The answer file. Its password is the random one made for this run.
windows_answer_file() {
    local arch='processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"'
    local key_xml='' paths='' n=1 d dir
    if [ -n "$windows_key" ]; then
        key_xml="<ProductKey><Key>$windows_key</Key><WillShowUI>OnError</WillShowUI></ProductKey>"
    fi
    # virtio-win's drivers for setup, wherever Windows PE letters its CD.
    for d in D E F G H; do
        for dir in viostor vioscsi NetKVM; do
            paths+="<PathAndCredentials wcm:action=\"add\" wcm:keyValue=\"$n\"><Path>$d:\\$dir\\$windows_driver_dir\\amd64</Path></PathAndCredentials>"
            n=$((n + 1))
        done
    done
    cat <<XML
<?xml version="1.0" encoding="utf-8"?>
<!-- Made by Kiln's scripts/hardware-host.sh for an unattended install. -->
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
  <settings pass="windowsPE">
    <component name="Microsoft-Windows-International-Core-WinPE" $arch>
      <SetupUILanguage><UILanguage>en-US</UILanguage></SetupUILanguage>
      <InputLocale>en-US</InputLocale>
      <SystemLocale>en-US</SystemLocale>
      <UILanguage>en-US</UILanguage>
      <UserLocale>en-US</UserLocale>
    </component>
    <component name="Microsoft-Windows-PnpCustomizationsWinPE" $arch>
      <DriverPaths>$paths</DriverPaths>
    </component>
    <component name="Microsoft-Windows-Setup" $arch>
      <DiskConfiguration>
        <Disk wcm:action="add">
          <DiskID>0</DiskID>
          <WillWipeDisk>true</WillWipeDisk>
          <CreatePartitions>
            <CreatePartition wcm:action="add"><Order>1</Order><Type>EFI</Type><Size>260</Size></CreatePartition>
            <CreatePartition wcm:action="add"><Order>2</Order><Type>MSR</Type><Size>16</Size></CreatePartition>
            <CreatePartition wcm:action="add"><Order>3</Order><Type>Primary</Type><Extend>true</Extend></CreatePartition>
          </CreatePartitions>
          <ModifyPartitions>
            <ModifyPartition wcm:action="add"><Order>1</Order><PartitionID>1</PartitionID><Format>FAT32</Format><Label>System</Label></ModifyPartition>
            <ModifyPartition wcm:action="add"><Order>2</Order><PartitionID>3</PartitionID><Format>NTFS</Format><Label>Windows</Label><Letter>C</Letter></ModifyPartition>
          </ModifyPartitions>
        </Disk>
      </DiskConfiguration>
      <ImageInstall>
        <OSImage>
          <InstallFrom><MetaData wcm:action="add"><Key>/IMAGE/NAME</Key><Value>$windows_edition</Value></MetaData></InstallFrom>
          <InstallTo><DiskID>0</DiskID><PartitionID>3</PartitionID></InstallTo>
        </OSImage>
      </ImageInstall>
      <UserData>
        <AcceptEula>true</AcceptEula>
        $key_xml
      </UserData>
    </component>
  </settings>
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" $arch>
      <ComputerName>kiln-windows</ComputerName>
    </component>
    <component name="Microsoft-Windows-Deployment" $arch>
      <RunSynchronous>
        <RunSynchronousCommand wcm:action="add"><Order>1</Order><Path>bcdedit /ems {default} on</Path></RunSynchronousCommand>
        <RunSynchronousCommand wcm:action="add"><Order>2</Order><Path>bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200</Path></RunSynchronousCommand>
        <RunSynchronousCommand wcm:action="add"><Order>3</Order><Path>bcdedit /bootems {bootmgr} on</Path></RunSynchronousCommand>
        <RunSynchronousCommand wcm:action="add"><Order>4</Order><Path>bcdedit /set {default} recoveryenabled no</Path></RunSynchronousCommand>
        <RunSynchronousCommand wcm:action="add"><Order>5</Order><Path>bcdedit /set {default} bootstatuspolicy ignoreallfailures</Path></RunSynchronousCommand>
      </RunSynchronous>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" $arch>
      <OOBE>
        <HideEULAPage>true</HideEULAPage>
        <HideOnlineAccountScreens>true</HideOnlineAccountScreens>
        <HideWirelessSetupInOOBE>true</HideWirelessSetupInOOBE>
        <ProtectYourPC>3</ProtectYourPC>
      </OOBE>
      <UserAccounts>
        <AdministratorPassword><Value>$windows_password</Value><PlainText>true</PlainText></AdministratorPassword>
        <LocalAccounts>
          <LocalAccount wcm:action="add">
            <Name>kiln</Name>
            <Group>Administrators</Group>
            <Password><Value>$windows_password</Value><PlainText>true</PlainText></Password>
          </LocalAccount>
        </LocalAccounts>
      </UserAccounts>
      <AutoLogon>
        <Enabled>true</Enabled>
        <Username>kiln</Username>
        <Password><Value>$windows_password</Value><PlainText>true</PlainText></Password>
        <LogonCount>1</LogonCount>
      </AutoLogon>
      <FirstLogonCommands>
        <SynchronousCommand wcm:action="add"><Order>1</Order><CommandLine>cmd /c for %d in (D E F G H) do if exist %d:\virtio-win-gt-x64.msi msiexec /i %d:\virtio-win-gt-x64.msi /qn ADDLOCAL=ALL</CommandLine></SynchronousCommand>
        <SynchronousCommand wcm:action="add"><Order>2</Order><CommandLine>cmd /c for %d in (D E F G H) do if exist %d:\guest-agent\qemu-ga-x86_64.msi msiexec /i %d:\guest-agent\qemu-ga-x86_64.msi /qn</CommandLine></SynchronousCommand>
      </FirstLogonCommands>
    </component>
  </settings>
</unattend>
XML
}

# The kiln commands of the install, one array per step (set `cmd`).
windows_iso_cmd() {
    cmd=("${kiln[@]}" image create win-iso --path "$(realpath "$windows_iso")" --format iso
         --firmware uefi --os-type windows)
}
virtio_win_cmd() {
    cmd=("${kiln[@]}" image create virtio-win --path "$(realpath "$virtio_win")" --format iso)
}
windows_flavor_cmd() {
    cmd=("${kiln[@]}" flavor create hw.win --vcpus "$cpus" --ram-mb "$win_ram_mb" --disk-gb 64)
}
windows_server_cmd() {
    cmd=("${kiln[@]}" server create win-install --flavor hw.win --image win-iso
         --cdrom virtio-win --answer-file --user-data "$workdir/autounattend.xml"
         --disk-bus "$windows_disk_bus" --network hwnet --wait active --timeout 120)
}

# shot NAME STEP: the server's screen through its VNC socket (vncdotool,
# the real client the tests use), else kilnd's screenshot route.
shot() {
    local name=$1 step=$2 id out
    mkdir -p "$shots"
    out="$shots/$name-$step.png"
    id=$("${kiln[@]}" --json server show "$name" | sed -n 's/^ *"id": "\(.*\)",$/\1/p' | head -1)
    if [ -x "$cache/venv/bin/vncdo" ] && [ -S "$workdir/state/servers/$id/vnc.sock" ]; then
        timeout 30 "$cache/venv/bin/vncdo" -s "$workdir/state/servers/$id/vnc.sock" capture "$out" \
            >/dev/null 2>&1 && { echo "hardware-host.sh: $name: screenshot $out (VNC)"; return 0; }
    fi
    "${kiln[@]}" server screenshot "$name" > "$out" 2>/dev/null \
        && echo "hardware-host.sh: $name: screenshot $out (kilnd)" \
        || { rm -f "$out"; echo "hardware-host.sh: $name: no screenshot at $step" >&2; }
}

# wait_for NAME WHAT SECS TEST...: runs TEST every 10 s until it succeeds,
# a screenshot every 5 minutes; fails after SECS or if the server errs.
wait_for() {
    local name=$1 what=$2 secs=$3 t0 n=0; shift 3
    t0=$(now)
    while ! "$@" >/dev/null 2>&1; do
        if [ "$(status_of "$name")" = ERROR ]; then
            echo "hardware-host.sh: $name: ERROR while waiting for $what" >&2
            "${kiln[@]}" server show "$name" >&2 || true
            return 1
        fi
        if awk -v a="$t0" -v b="$(now)" -v s="$secs" 'BEGIN { exit !(b - a > s) }'; then
            echo "hardware-host.sh: $name: no $what after $secs s" >&2
            return 1
        fi
        n=$((n + 1))
        [ $((n % 30)) != 0 ] || shot "$name" "wait-$what-$((n / 6))min"
        sleep 10
    done
    echo "hardware-host.sh: $name: $what after $(since "$t0") s"
}

console_has() { "${kiln[@]}" server console "$1" --tail 200 | grep -Eq "$2"; }

# The whole install; 0 when the agent of the installed Windows answered.
windows_install() {
    local name=win-install t0 total
    windows_answer_file > "$workdir/autounattend.xml"
    for step in windows_iso_cmd virtio_win_cmd windows_flavor_cmd; do
        "$step"; echo "hardware-host.sh: windows: $(print_command "${cmd[@]}")"
        "${cmd[@]}" >/dev/null || return 1
    done
    windows_server_cmd
    echo "hardware-host.sh: windows: $(print_command "${cmd[@]}")"
    total=$(now); t0=$(now)
    "${cmd[@]}" >/dev/null || { "${kiln[@]}" server show "$name" >&2; return 1; }
    echo "hardware-host.sh: $name: ACTIVE after $(since "$t0") s"
    # "Press any key to boot from CD or DVD": a few Enters, no viewer.
    for _ in $(seq 8); do "${kiln[@]}" server keys "$name" ret >/dev/null 2>&1 || true; sleep 1; done
    shot "$name" setup
    wait_for "$name" "SAC" "$install_timeout" console_has "$name" "$windows_ready" || { shot "$name" failed; return 1; }
    shot "$name" sac
    wait_for "$name" "agent" "$install_timeout" "${kiln[@]}" server guest "$name" || { shot "$name" failed; return 1; }
    "${kiln[@]}" server guest "$name"
    shot "$name" desktop
    echo "hardware-host.sh: $name: installed and answering after $(since "$total") s"
    t0=$(now)
    "${kiln[@]}" server stop "$name"
    local status=; for _ in $(seq 600); do status=$(status_of "$name"); [ "$status" = SHUTOFF ] && break; sleep 0.5; done
    echo "hardware-host.sh: $name: $status $(since "$t0") s after stop (guest-shutdown through the agent)"
    "${kiln[@]}" server delete "$name"
}
