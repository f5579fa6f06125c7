<#
.SYNOPSIS
    install.ps1: provision a Windows PC and hand off to `llama-bootstrap run`.

.DESCRIPTION
    Mirror image of install.sh, function for function. Finds conda/mamba/micromamba, else downloads a
    pinned, sha256-checked Miniforge3 and installs it unattended; asks conda where the env lives (or
    goes); checks the prerequisites (git, disk, a prefix Miniforge's installer accepts) before any
    download; creates the conda env by that prefix from the explicit lock conda-win-64.lock (or keeps
    it if it already matches); pip-installs the hash-locked layer requirements\win-64-<torch>.txt
    inside it; installs the bootstrapper; hands off to `llama-bootstrap run` (or `llama-bootstrap
    demo`) and exits with its exit code. Every setting is an environment variable
    (LLAMA_BOOTSTRAP_*); parameters are conveniences over them. Reference: docs\installers.md.

    Run it with: powershell -NoProfile -ExecutionPolicy Bypass -File .\install.ps1 [parameters]

    Test hook (no parameter): LLAMA_BOOTSTRAP_MINIFORGE_URL, the base URL Miniforge is fetched from
    (https; http only for 127.0.0.1/localhost).

.PARAMETER Manifest
    LLAMA_BOOTSTRAP_MANIFEST: manifest path [<script dir>\manifest.yaml]
.PARAMETER EnvName
    LLAMA_BOOTSTRAP_ENV_NAME: conda env name [myenv]
.PARAMETER Model
    LLAMA_BOOTSTRAP_MODEL: model key [the manifest's]
.PARAMETER Profile
    LLAMA_BOOTSTRAP_PROFILE: global or cn (mirrors) [the manifest's]
.PARAMETER CondaPrefix
    LLAMA_BOOTSTRAP_CONDA_PREFIX: where Miniforge goes if no conda is found [%USERPROFILE%\miniforge3]
.PARAMETER Torch
    LLAMA_BOOTSTRAP_TORCH: auto, cuda or cpu pip layer [auto: cuda when nvidia-smi works]
.PARAMETER SkipDownload
    LLAMA_BOOTSTRAP_SKIP_DOWNLOAD: skip the model download (and the smoke test)
.PARAMETER SkipSmoke
    LLAMA_BOOTSTRAP_SKIP_SMOKE: skip the smoke test
.PARAMETER Demo
    LLAMA_BOOTSTRAP_DEMO: offline demo (tiny local model) instead of the real model
.PARAMETER InstallOnly
    LLAMA_BOOTSTRAP_INSTALL_ONLY: install, then print the env's python on stdout; no hand-off
.PARAMETER DryRun
    LLAMA_BOOTSTRAP_DRY_RUN: print the plan, change nothing
.PARAMETER Yes
    LLAMA_BOOTSTRAP_YES: unattended: allowed to replace a mismatched env
.PARAMETER InitShell
    LLAMA_BOOTSTRAP_INIT_SHELL: let conda edit your PowerShell profile
.PARAMETER Log
    LLAMA_BOOTSTRAP_LOG: log file [%LOCALAPPDATA%\llama-bootstrap\logs\...]
.PARAMETER FromBundle
    LLAMA_BOOTSTRAP_FROM_BUNDLE: install offline from this file (made by `llama-bootstrap bundle`): verified
    first, then no network at all
.PARAMETER Rollback
    LLAMA_BOOTSTRAP_ROLLBACK: switch back to the env an update replaced (and forward again)
.PARAMETER Uninstall
    LLAMA_BOOTSTRAP_UNINSTALL: remove what the install receipt says was created (with -DryRun: list it;
    -Yes: no question). The receipt is <state folder>\receipt.json, the state folder being
    LLAMA_BOOTSTRAP_STATE_DIR (relative to the manifest's folder) or .llama-bootstrap next to the manifest.
.PARAMETER Help
    show this help

.NOTES
    -Debug (PowerShell's common parameter) sets LLAMA_BOOTSTRAP_DEBUG: trace commands, tracebacks.

    Exit codes: 0 ok; 1 a step or check failed; 2 bad input (parameter, variable, manifest; a
    parameter PowerShell itself refuses, such as -Torch CPU or a stray --yes, also exits non-zero);
    3 another llama-bootstrap run holds the lock; 130 interrupted. The hand-off's code is passed through.

    Step table (install.sh <-> install.ps1); tests/installers/test_installer_static.py reads it:
      parse_args             <-> Read-Options
      from_bundle            <-> Install-FromBundle
      detect_platform        <-> Get-Platform
      select_locks           <-> Select-Locks
      find_conda             <-> Find-Conda
      check_prerequisites    <-> Test-Prerequisites
      start_log              <-> Start-Log
      print_plan             <-> Write-Plan
      install_miniforge      <-> Install-Miniforge
      create_venv_fallback   <-> New-VenvFallback
      create_env             <-> New-CondaEnv
      install_pip_layer      <-> Install-PipLayer
      install_bootstrapper   <-> Install-Bootstrapper
      hand_off               <-> Invoke-HandOff

.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File .\install.ps1 -Profile cn -Yes
#>
# PositionalBinding=$false: a stray argument (`.\install.ps1 --yes`) is refused, not taken as -Manifest.
[CmdletBinding(PositionalBinding = $false)]
param(
    [string]$Manifest,
    [string]$EnvName,
    [string]$Model,
    [ValidateSet('global', 'cn', IgnoreCase = $false)]
    [string]$Profile,
    [string]$CondaPrefix,
    [ValidateSet('auto', 'cuda', 'cpu', IgnoreCase = $false)]
    [string]$Torch,
    [switch]$SkipDownload,
    [switch]$SkipSmoke,
    [switch]$Demo,
    [switch]$InstallOnly,
    [switch]$DryRun,
    [switch]$Yes,
    [switch]$InitShell,
    [string]$Log,
    [string]$FromBundle,
    [switch]$Rollback,
    [switch]$Uninstall,
    [switch]$Help
)

# ---- pinned constants -------------------------------------------------------------------------
$MiniforgeVersion = '25.3.1-0'
# sha256 of the release asset of conda-forge/miniforge 25.3.1-0 (see docs\installers.md).
$MiniforgeSha256WindowsX86_64 = 'b7706a307b005fc397b70a244de19129100906928abccd5592580eb8296fb240'
$MiniforgeUrlGlobal = "https://github.com/conda-forge/miniforge/releases/download/$MiniforgeVersion"
# TUNA's mirror of the GitHub release assets (same files, same sha256).
$MiniforgeUrlCn = "https://mirrors.tuna.tsinghua.edu.cn/github-release/conda-forge/miniforge/$MiniforgeVersion"
# The channel URL the explicit conda locks are written against (rewritten for a profile mirror).
$CondaForgeChannel = 'https://conda.anaconda.org/conda-forge'
# The Windows CUDA build of torch is published only on PyTorch's own index (documented in
# docs\installers.md); pip looks there only for requirements\win-64-cuda.txt, and only for files
# whose sha256 that lock already pins.
$TorchCudaIndex = 'https://download.pytorch.org/whl/cu128'
# The venv fallback's pip locks are for this Python (see requirements\demo-*.in).
$FallbackPython = '3.11'
# Retries after a failed download (install.sh uses the same number).
$DownloadRetries = 3
# Free disk the env needs, in GB (conda layer + pip layer + pip's unpacking), by pip layer; see
# docs\installers.md. The Windows cpu layer is the small CPU build of torch.
$DiskGbCuda = 8
$DiskGbCpu = 3
$DiskGbMiniforge = 1
# The stamps and pointers an env carries (bootstrap\receipt.py reads the same names): conda: in
# conda-meta\, a venv: at its top.
$StampConda = 'llama-bootstrap-lock.sha256'
$StampPip = 'llama-bootstrap-pip-lock.sha256'
$PreviousPointer = 'llama-bootstrap-previous'
$HomePointer = 'llama-bootstrap-home'

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# -Debug is PowerShell's common parameter; only the script scope sees whether it was passed.
$script:DebugParameter = $PSBoundParameters.ContainsKey('Debug')
$script:LogFile = ''
$script:TmpDir = ''
$script:VenvDir = ''
$script:BundleUndo = ''
$script:EnvKind = 'conda'
$script:Receipt = ''
$script:UpdateSlot = ''
$script:UpdateNote = ''

# ---- small vocabulary -------------------------------------------------------------------------
function Write-LogLine([string]$Message) {
    if ($script:LogFile) {
        try { Add-Content -LiteralPath $script:LogFile -Value $Message -Encoding UTF8 } catch { }
    }
}

function Write-Stderr([string]$Prefix, [string]$Message, [System.ConsoleColor]$Colour) {
    $coloured = (-not [Console]::IsErrorRedirected) -and (-not $env:NO_COLOR)
    if ($coloured) {
        $old = [Console]::ForegroundColor
        [Console]::ForegroundColor = $Colour
        [Console]::Error.Write($Prefix)
        [Console]::ForegroundColor = $old
    } else {
        [Console]::Error.Write($Prefix)
    }
    [Console]::Error.WriteLine(" $Message")
}

function Write-Say([string]$Message) {
    Write-Stderr 'llama-bootstrap:' $Message ([System.ConsoleColor]::White)
    Write-LogLine "llama-bootstrap: $Message"
}

function Write-Warn([string]$Message) {
    Write-Stderr 'warning:' $Message ([System.ConsoleColor]::Yellow)
    Write-LogLine "warning: $Message"
}

# err: stop the install; the top-level catch prints the message and the log path, then exits with
# ExitCode (1 a step failed, 2 bad input; see .NOTES).
function Stop-Install([string]$Message, [int]$ExitCode = 1) {
    $e = [System.Exception]::new($Message)
    $e.Data['llama-bootstrap-exit'] = $ExitCode
    throw $e
}

function Assert-Command([string]$Name) {
    if (-not (Get-Command $Name -ErrorAction SilentlyContinue)) {
        Stop-Install "need '$Name' (command not found); install it and re-run"
    }
}

# A Ctrl-C in a console child ends it with STATUS_CONTROL_C_EXIT; the CLI itself exits 130.
function Test-Interrupted([int]$Code) {
    return ($Code -eq 130 -or $Code -eq -1073741510)
}

# ensure: run a native command; output to the console and the log; stop on a non-zero exit.
function Invoke-Ensure([string]$Exe, [string[]]$Arguments) {
    $line = "+ $Exe $($Arguments -join ' ')"
    Write-LogLine $line
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $Exe @Arguments 2>&1 | ForEach-Object {
            $text = "$_"
            Write-LogLine $text
            [Console]::Error.WriteLine($text)
        }
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
    }
    if (Test-Interrupted $code) {
        Stop-Install "interrupted: $Exe $($Arguments -join ' ')" 130
    }
    if ($code -ne 0) {
        Stop-Install "command failed (exit $code): $Exe $($Arguments -join ' ')"
    }
}

# "1/true/yes/on" -> 1, "0/false/no/off/empty" -> 0, anything else is bad input.
function ConvertTo-Bool([string]$Name, [string]$Value) {
    switch ($Value.ToLowerInvariant()) {
        { $_ -in @('1', 'true', 'yes', 'on') } { return 1 }
        { $_ -in @('0', 'false', 'no', 'off', '') } { return 0 }
        default { Stop-Install "$Name must be 0 or 1, got '$Value'" 2 }
    }
}

function Get-EnvOr([string]$Name, [string]$Default) {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ($value) { return $value }
    return $Default
}

function Show-Usage {
    Get-Help -Full $PSCommandPath | Out-String | Write-Output
}

function Test-IsWindows {
    return ([Environment]::OSVersion.Platform -eq [PlatformID]::Win32NT)
}

# ---- steps ------------------------------------------------------------------------------------
function Read-Options {
    $script:RootDir = $PSScriptRoot
    $o = @{}
    $o.Manifest = Get-EnvOr 'LLAMA_BOOTSTRAP_MANIFEST' (Join-Path $script:RootDir 'manifest.yaml')
    $o.EnvName = Get-EnvOr 'LLAMA_BOOTSTRAP_ENV_NAME' 'myenv'
    $o.Model = Get-EnvOr 'LLAMA_BOOTSTRAP_MODEL' ''
    $o.Profile = Get-EnvOr 'LLAMA_BOOTSTRAP_PROFILE' ''
    $o.CondaPrefix = Get-EnvOr 'LLAMA_BOOTSTRAP_CONDA_PREFIX' (Join-Path $env:USERPROFILE 'miniforge3')
    $o.Torch = Get-EnvOr 'LLAMA_BOOTSTRAP_TORCH' 'auto'
    $o.SkipDownload = ConvertTo-Bool 'LLAMA_BOOTSTRAP_SKIP_DOWNLOAD' (Get-EnvOr 'LLAMA_BOOTSTRAP_SKIP_DOWNLOAD' '0')
    $o.SkipSmoke = ConvertTo-Bool 'LLAMA_BOOTSTRAP_SKIP_SMOKE' (Get-EnvOr 'LLAMA_BOOTSTRAP_SKIP_SMOKE' '0')
    $o.Demo = ConvertTo-Bool 'LLAMA_BOOTSTRAP_DEMO' (Get-EnvOr 'LLAMA_BOOTSTRAP_DEMO' '0')
    $o.InstallOnly = ConvertTo-Bool 'LLAMA_BOOTSTRAP_INSTALL_ONLY' (Get-EnvOr 'LLAMA_BOOTSTRAP_INSTALL_ONLY' '0')
    $o.DryRun = ConvertTo-Bool 'LLAMA_BOOTSTRAP_DRY_RUN' (Get-EnvOr 'LLAMA_BOOTSTRAP_DRY_RUN' '0')
    $o.Yes = ConvertTo-Bool 'LLAMA_BOOTSTRAP_YES' (Get-EnvOr 'LLAMA_BOOTSTRAP_YES' '0')
    $o.InitShell = ConvertTo-Bool 'LLAMA_BOOTSTRAP_INIT_SHELL' (Get-EnvOr 'LLAMA_BOOTSTRAP_INIT_SHELL' '0')
    $o.Rollback = ConvertTo-Bool 'LLAMA_BOOTSTRAP_ROLLBACK' (Get-EnvOr 'LLAMA_BOOTSTRAP_ROLLBACK' '0')
    $o.Uninstall = ConvertTo-Bool 'LLAMA_BOOTSTRAP_UNINSTALL' (Get-EnvOr 'LLAMA_BOOTSTRAP_UNINSTALL' '0')
    $o.Log = Get-EnvOr 'LLAMA_BOOTSTRAP_LOG' ''
    $o.Debug = ConvertTo-Bool 'LLAMA_BOOTSTRAP_DEBUG' (Get-EnvOr 'LLAMA_BOOTSTRAP_DEBUG' '0')
    $o.MiniforgeUrl = Get-EnvOr 'LLAMA_BOOTSTRAP_MINIFORGE_URL' ''
    $o.FromBundle = Get-EnvOr 'LLAMA_BOOTSTRAP_FROM_BUNDLE' ''

    # Parameters win over the environment.
    if ($Manifest) { $o.Manifest = $Manifest }
    if ($EnvName) { $o.EnvName = $EnvName }
    if ($Model) { $o.Model = $Model }
    if ($Profile) { $o.Profile = $Profile }
    if ($CondaPrefix) { $o.CondaPrefix = $CondaPrefix }
    if ($Torch) { $o.Torch = $Torch }
    if ($SkipDownload) { $o.SkipDownload = 1 }
    if ($SkipSmoke) { $o.SkipSmoke = 1 }
    if ($Demo) { $o.Demo = 1 }
    if ($InstallOnly) { $o.InstallOnly = 1 }
    if ($DryRun) { $o.DryRun = 1 }
    if ($Yes) { $o.Yes = 1 }
    if ($InitShell) { $o.InitShell = 1 }
    if ($Rollback) { $o.Rollback = 1 }
    if ($Uninstall) { $o.Uninstall = 1 }
    if ($Log) { $o.Log = $Log }
    if ($script:DebugParameter) { $o.Debug = 1 }
    if ($FromBundle) { $o.FromBundle = $FromBundle }

    # Case-sensitive, as in install.sh and the CLI (-cnotcontains; -notcontains ignores case).
    if (@('auto', 'cuda', 'cpu') -cnotcontains $o.Torch) {
        Stop-Install "LLAMA_BOOTSTRAP_TORCH / -Torch must be auto, cuda or cpu, got '$($o.Torch)'" 2
    }
    if (@('', 'global', 'cn') -cnotcontains $o.Profile) {
        Stop-Install "LLAMA_BOOTSTRAP_PROFILE / -Profile must be global or cn, got '$($o.Profile)'" 2
    }
    if ($o.EnvName -eq 'base' -or $o.EnvName -cnotmatch '^[A-Za-z0-9._-]+$') {
        Stop-Install "env name '$($o.EnvName)' is not allowed (letters, digits, . _ -; not 'base')" 2
    }
    if (-not $o.FromBundle -and (-not (Test-Path -LiteralPath (Join-Path $script:RootDir 'pyproject.toml')) -or
        -not (Test-Path -LiteralPath (Join-Path $script:RootDir 'requirements')))) {
        Stop-Install 'run install.ps1 from an unpacked llama-bootstrap release (requirements\ and pyproject.toml next to it)'
    }
    if (-not $o.FromBundle -and $o.Demo -ne 1 -and -not (Test-Path -LiteralPath $o.Manifest -PathType Leaf)) {
        Stop-Install "manifest not found: $($o.Manifest) (pass -Manifest PATH or set LLAMA_BOOTSTRAP_MANIFEST)" 2
    }
    if ($o.Debug -eq 1) {
        $env:LLAMA_BOOTSTRAP_DEBUG = '1'
        Set-PSDebug -Trace 1
    }
    # Isolation: nothing from the user's Python setup leaks into the env we build. PYTHONUTF8: the
    # env's Python reads and writes UTF-8 even when its output is redirected (Python 3.9 would use
    # the ANSI code page, cp1252 on en-US, and fail on the model's Chinese answer).
    $env:PYTHONNOUSERSITE = '1'
    $env:PYTHONUTF8 = '1'
    foreach ($name in @('PYTHONPATH', 'PYTHONHOME', 'PIP_USER', 'PIP_REQUIRE_VIRTUALENV')) {
        Remove-Item -LiteralPath "Env:$name" -ErrorAction SilentlyContinue
    }
    $base = $env:LOCALAPPDATA
    if (-not $base) { $base = Join-Path $env:USERPROFILE 'AppData\Local' }
    $script:StateDir = Join-Path $base 'llama-bootstrap'
    $script:Opt = $o
}

function Get-Platform {
    if (-not (Test-IsWindows)) { Stop-Install 'install.ps1 is for Windows; on Linux run install.sh' }
    $arch = $env:PROCESSOR_ARCHITEW6432
    if (-not $arch) { $arch = $env:PROCESSOR_ARCHITECTURE }
    switch ($arch) {
        'AMD64' {
            $script:PlatformArch = 'x86_64'
            $script:Platform = 'win-64'
            $script:MiniforgeSha256 = $MiniforgeSha256WindowsX86_64
        }
        'ARM64' { Stop-Install 'Windows on ARM is not supported (no CUDA torch for it); use an x86_64 PC' }
        default { Stop-Install "unsupported CPU architecture '$arch' (supported: AMD64)" }
    }
    $script:MiniforgeFile = "Miniforge3-$MiniforgeVersion-Windows-$($script:PlatformArch).exe"
}

function Select-Locks {
    $o = $script:Opt
    $script:TorchReason = 'asked for'
    $script:TorchKind = $o.Torch
    if ($script:TorchKind -eq 'auto') {
        $smi = Get-Command 'nvidia-smi' -ErrorAction SilentlyContinue
        $gpu = $false
        if ($smi) {
            $eap = $ErrorActionPreference
            $ErrorActionPreference = 'Continue'
            try { & $smi.Source -L *> $null; $gpu = ($LASTEXITCODE -eq 0) } catch { $gpu = $false }
            $ErrorActionPreference = $eap
        }
        if ($gpu) {
            $script:TorchKind = 'cuda'; $script:TorchReason = 'auto: nvidia-smi found a GPU'
        } else {
            $script:TorchKind = 'cpu'; $script:TorchReason = 'auto: no working nvidia-smi'
        }
    }
    if ($script:TorchKind -eq 'cuda') { $script:DiskGb = $DiskGbCuda } else { $script:DiskGb = $DiskGbCpu }
    $script:CondaLock = Join-Path $script:RootDir "conda-$($script:Platform).lock"
    $script:PipLock = Join-Path $script:RootDir "requirements\$($script:Platform)-$($script:TorchKind).txt"
    $script:FallbackLock = Join-Path $script:RootDir "requirements\demo-$($script:Platform).txt"
    if (-not (Test-Path -LiteralPath $script:CondaLock)) {
        Stop-Install "no conda lock for $($script:Platform): $($script:CondaLock) is missing (this platform is detected but not locked yet)"
    }
    if (-not (Test-Path -LiteralPath $script:PipLock)) {
        Stop-Install "no pip lock for $($script:Platform)/$($script:TorchKind): $($script:PipLock) is missing (try -Torch cpu)"
    }
    if (Select-String -LiteralPath $script:PipLock -Pattern '^# llama-bootstrap: incomplete lock' -Quiet) {
        Stop-Install "$($script:PipLock) is not fully hashed yet (see its header); re-lock it with 'llama-bootstrap lock' or use -Torch cpu"
    }
    # The profile in force: the parameter/variable, else the manifest's top-level `profile:`.
    $script:ProfileName = $o.Profile
    if (-not $script:ProfileName -and (Test-Path -LiteralPath $o.Manifest -PathType Leaf)) {
        $script:ProfileName = Read-ManifestValue $o.Manifest 'profile'
    }
    $script:MiniforgeBaseUrl = $o.MiniforgeUrl
    if (-not $script:MiniforgeBaseUrl) {
        if ($script:ProfileName -eq 'cn') { $script:MiniforgeBaseUrl = $MiniforgeUrlCn } else { $script:MiniforgeBaseUrl = $MiniforgeUrlGlobal }
    }
    Test-DownloadUrl $script:MiniforgeBaseUrl
    $script:CondaMirror = ''
    if ($script:ProfileName -and (Test-Path -LiteralPath $o.Manifest -PathType Leaf)) {
        $script:CondaMirror = Read-ManifestValue $o.Manifest "profiles.$($script:ProfileName).conda_channel"
        if ($script:CondaMirror) { Test-DownloadUrl $script:CondaMirror }
    }
}

# https only; plain http only for a loopback test server.
function Test-DownloadUrl([string]$Url) {
    if ($Url -notmatch '^(https://|http://(127\.0\.0\.1|localhost)(:|/))') {
        Stop-Install "refusing to download from '$Url': only https:// URLs (http:// only for 127.0.0.1/localhost)" 2
    }
}

# A scalar of the manifest by its dotted key (`profile`, `profiles.cn.conda_channel`), read line
# by line with install.sh's rules (manifest_value): two-space indentation, the value on the key's
# line; a comment starts at whitespace + #; quotes are dropped; a trailing CR is ignored. '' when
# absent. tests/installers/fixtures/manifest-values.* hold both scripts to the same answers.
function Read-ManifestValue([string]$Path, [string]$Key) {
    $keys = $Key.Split('.')
    $depth = 0
    # .NET resolves relative paths against the process's folder, not PowerShell's: resolve first.
    foreach ($raw in [System.IO.File]::ReadAllLines((Convert-Path -LiteralPath $Path), [System.Text.Encoding]::UTF8)) {
        $line = $raw -replace '\r$', ''
        if ($line -match '^ *(#.*)?$') { continue }
        $indent = $line.Length - $line.TrimStart(' ').Length
        if ($indent % 2) { continue }
        $level = $indent / 2 + 1
        if ($level -gt $depth + 1) { continue }
        $depth = $level - 1
        $rest = $line.Substring($indent)
        if (-not $rest.StartsWith($keys[$level - 1] + ':', [System.StringComparison]::Ordinal)) { continue }
        if ($level -lt $keys.Count) { $depth = $level; continue }
        $v = $rest.Substring($keys[$level - 1].Length + 1) -replace '^[ \t]+', ''
        if ($v.StartsWith('#')) { $v = '' }
        $v = $v -replace '[ \t]+#.*$', '' -replace '[ \t]+$', '' -replace '[''"]', ''
        return $v
    }
    return ''
}

# conda on PATH is often condabin\conda.bat. A batch file runs through cmd.exe, which reads & | % ^
# in every argument (our paths included) as its own syntax: use the conda.exe it wraps instead.
function Resolve-CondaExe([string]$Path) {
    $extension = [System.IO.Path]::GetExtension($Path).ToLowerInvariant()
    if ($extension -ne '.bat' -and $extension -ne '.cmd') { return $Path }
    $name = [System.IO.Path]::GetFileNameWithoutExtension($Path)
    $folder = Split-Path -Parent $Path
    foreach ($exe in @((Join-Path (Join-Path (Split-Path -Parent $folder) 'Scripts') "$name.exe"), (Join-Path $folder "$name.exe"))) {
        if (Test-Path -LiteralPath $exe -PathType Leaf) { return $exe }
    }
    Stop-Install ("found $Path, a batch file, and no $name.exe next to it; llama-bootstrap calls conda.exe`n" +
        'directly (cmd.exe would re-read & and % in paths): set CONDA_EXE to your conda.exe and re-run')
}

function Find-Conda {
    $o = $script:Opt
    $script:CondaBin = ''
    $script:CondaFoundVia = ''
    if ($env:CONDA_EXE -and (Test-Path -LiteralPath $env:CONDA_EXE -PathType Leaf)) {
        $script:CondaBin = Resolve-CondaExe $env:CONDA_EXE; $script:CondaFoundVia = 'CONDA_EXE'
    }
    if (-not $script:CondaBin) {
        foreach ($candidate in @('conda', 'mamba', 'micromamba')) {
            $cmd = Get-Command $candidate -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
            if ($cmd) { $script:CondaBin = Resolve-CondaExe $cmd.Source; $script:CondaFoundVia = 'PATH'; break }
        }
    }
    if (-not $script:CondaBin) {
        $prefixes = @($o.CondaPrefix, (Join-Path $env:USERPROFILE 'miniforge3'), (Join-Path $env:USERPROFILE 'mambaforge'),
            (Join-Path $env:USERPROFILE 'miniconda3'), (Join-Path $env:USERPROFILE 'anaconda3'), 'C:\ProgramData\miniforge3')
        foreach ($prefix in $prefixes) {
            $exe = Join-Path $prefix 'Scripts\conda.exe'
            if (Test-Path -LiteralPath $exe -PathType Leaf) {
                $script:CondaBin = $exe; $script:CondaFoundVia = 'usual prefix'; break
            }
        }
    }
    Resolve-EnvPrefix
}

# The one place that decides where the env lives: EnvPrefix, and why: EnvWhy. conda's own rule for
# `--name`: an env of that name in one of its envs dirs, else the first writable envs dir (a base
# in C:\ProgramData, or `envs_dirs` in .condarc, move it elsewhere). The env is then created and
# addressed by that prefix, never by name.
function Resolve-EnvPrefix {
    $o = $script:Opt
    if (-not $script:CondaBin) {
        $script:EnvPrefix = Join-Path $o.CondaPrefix "envs\$($o.EnvName)"
        $script:EnvWhy = 'inside the Miniforge to be installed'
        return
    }
    $dirs = @(Get-CondaEnvsDirs $script:CondaBin)
    foreach ($dir in $dirs) {
        if (Test-Path -LiteralPath (Join-Path (Join-Path $dir $o.EnvName) 'conda-meta') -PathType Container) {
            $script:EnvPrefix = Join-Path $dir $o.EnvName
            $script:EnvWhy = "an env of that name in conda's envs dir $dir"
            return
        }
    }
    $skipped = @()
    foreach ($dir in $dirs) {
        if (Test-WritableDir $dir) {
            $script:EnvPrefix = Join-Path $dir $o.EnvName
            $script:EnvWhy = "conda's first writable envs dir"
            if ($skipped) { $script:EnvWhy += " (not writable: $($skipped -join ', '))" }
            return
        }
        $skipped += $dir
    }
    Stop-Install ("none of conda's envs directories is writable ($($skipped -join ', '));`n" +
        'add one you can write to (conda config --prepend envs_dirs DIR), or use a conda of your own')
}

# `conda info --json`'s envs dirs: envs_dirs (conda, mamba 1) or "envs directories" (micromamba, mamba 2).
function Get-CondaEnvsDirs([string]$Conda) {
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $out = & $Conda info --json 2> $null
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
    }
    $info = $null
    if ($code -eq 0) {
        try { $info = ($out -join "`n") | ConvertFrom-Json } catch { $info = $null }
    }
    if (-not $info) { Stop-Install "'$Conda info --json' failed; is that conda working?" }
    $dirs = @()
    if ($info.PSObject.Properties['envs_dirs']) { $dirs = @($info.envs_dirs) }
    elseif ($info.PSObject.Properties['envs directories']) { $dirs = @($info.'envs directories') }
    if ($dirs.Count -eq 0) { Stop-Install "'$Conda info --json' names no envs directories; is that conda working?" }
    return $dirs
}

# A folder we could create files in: it, or the nearest folder above it that exists (probed with a
# file that deletes itself on close).
function Test-WritableDir([string]$Path) {
    $dir = $Path
    while ($dir -and -not (Test-Path -LiteralPath $dir)) { $dir = Split-Path -Parent $dir }
    if (-not $dir -or -not (Test-Path -LiteralPath $dir -PathType Container)) { return $false }
    $probe = Join-Path $dir ('.llama-bootstrap-probe-' + [System.Guid]::NewGuid().ToString('N'))
    try {
        $stream = New-Object System.IO.FileStream($probe, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write,
            [System.IO.FileShare]::None, 1, [System.IO.FileOptions]::DeleteOnClose)
        $stream.Dispose()
        return $true
    } catch {
        return $false
    }
}

# What Miniforge's silent Windows installer (conda/constructor's NSIS template) would refuse, with
# only an exit code to show for it: a space, one of ^ % ! = , ( ), or more than 46 characters while
# Windows long paths are off (LongPathsEnabled=0) and the user is not an administrator. '' if none.
function Get-MiniforgePrefixProblem([string]$Prefix, [string]$LongPathsEnabled, [bool]$IsAdmin) {
    if ($Prefix.Contains(' ')) { return 'it contains a space' }
    $bad = [regex]::Match($Prefix, '[\^%!=,()]')
    if ($bad.Success) { return "it contains '$($bad.Value)' (the installer refuses ^ % ! = , ( ))" }
    if ($Prefix.Length -gt 46 -and $LongPathsEnabled -eq '0' -and -not $IsAdmin) {
        return ('it is longer than 46 characters while Windows long paths are off (LongPathsEnabled=0) ' +
            'and only an administrator may turn them on')
    }
    return ''
}

# Everything that can be known to fail is checked here, before any download: git (the model's
# source is cloned with it), free disk where the env goes, and a prefix Miniforge's installer takes.
function Test-Prerequisites {
    $o = $script:Opt
    $git = Get-Command 'git' -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if (-not $git) {
        Stop-Install ("need git (the model's source is cloned with it); install it with`n" +
            "  winget install --id Git.Git -e --source winget`n" +
            'or from https://git-scm.com/download/win, then open a new PowerShell window and re-run')
    }
    $script:GitBin = $git.Source
    $needGb = $script:DiskGb
    if (-not $script:CondaBin) {
        $longPaths = ''
        try {
            $longPaths = "$((Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -Name 'LongPathsEnabled' -ErrorAction Stop).LongPathsEnabled)"
        } catch { $longPaths = '' }
        $identity = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
        $isAdmin = $identity.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
        $problem = Get-MiniforgePrefixProblem $o.CondaPrefix $longPaths $isAdmin
        if ($problem) {
            $suggestion = Join-Path $env:SystemDrive 'miniforge3'
            Stop-Install ("the Miniforge prefix '$($o.CondaPrefix)' cannot be used: $problem;`n" +
                "Miniforge's silent installer would stop with only an exit code. Choose another, e.g.`n" +
                "  -CondaPrefix $suggestion   (or set LLAMA_BOOTSTRAP_CONDA_PREFIX)") 2
        }
        if ($o.CondaPrefix -match '[^\x00-\x7F]') {
            Write-Warn ("the Miniforge prefix '$($o.CondaPrefix)' has non-ASCII characters; Miniforge's installer " +
                "accepts them only in the system code page; if it fails, use -CondaPrefix $(Join-Path $env:SystemDrive 'miniforge3')")
        }
        if ((Test-Path -LiteralPath $o.CondaPrefix) -and (Get-ChildItem -LiteralPath $o.CondaPrefix -Force | Select-Object -First 1)) {
            Stop-Install "$($o.CondaPrefix) exists but holds no conda; remove it or choose another -CondaPrefix" 2
        }
        $needGb += $DiskGbMiniforge
    }
    $script:DiskLine = 'not checked'
    $at = $script:EnvPrefix
    while ($at -and -not (Test-Path -LiteralPath $at)) { $at = Split-Path -Parent $at }
    if (-not $at) { return }
    try {
        $drive = New-Object System.IO.DriveInfo ([System.IO.Path]::GetPathRoot((Resolve-Path -LiteralPath $at).ProviderPath))
        $free = $drive.AvailableFreeSpace
    } catch {
        $script:DiskLine = "not checked (no drive for $at)"
        return
    }
    $script:DiskLine = "$([math]::Floor($free / 1073741824)) GB free at $at (the env needs about $needGb GB)"
    if ($free -lt $needGb * 1073741824) {
        Stop-Install ("not enough disk for the env: $($script:DiskLine);`n" +
            'free some space there, or put the env on another disk (conda config --prepend envs_dirs DIR, or -CondaPrefix DIR)')
    }
}

function Start-Log {
    $o = $script:Opt
    if ($o.Log) {
        $script:LogFile = $o.Log
    } else {
        $script:LogFile = Join-Path $script:StateDir ("logs\install-{0}.log" -f (Get-Date -Format 'yyyyMMdd-HHmmss'))
    }
    $folder = Split-Path -Parent $script:LogFile
    if ($folder) { New-Item -ItemType Directory -Force -Path $folder | Out-Null }
    Add-Content -LiteralPath $script:LogFile -Value "install.ps1 started $(Get-Date) in $($script:RootDir)" -Encoding UTF8
    $script:TmpDir = Join-Path ([System.IO.Path]::GetTempPath()) ("llama-bootstrap." + [System.Guid]::NewGuid().ToString('N'))
    New-Item -ItemType Directory -Force -Path $script:TmpDir | Out-Null
}

function Get-HandOffArguments {
    $o = $script:Opt
    $a = @('-m', 'bootstrap')
    if ($o.Demo -eq 1) { return ($a + @('demo')) }
    $a += @('run', '--manifest', $o.Manifest)
    if ($o.Profile) { $a += @('--profile', $o.Profile) }
    if ($o.Model) { $a += @('--model', $o.Model) }
    if ($o.SkipDownload -eq 1) { $a += @('--skip', 'pull', '--skip', 'smoke') }
    elseif ($o.SkipSmoke -eq 1) { $a += @('--skip', 'smoke') }
    return $a
}

function Write-Plan {
    $o = $script:Opt
    $handOff = Get-HandOffArguments
    if ($script:CondaBin) {
        $condaLine = "$($script:CondaBin) (found via $($script:CondaFoundVia))"
    } else {
        $condaLine = "not found: will install Miniforge3 $MiniforgeVersion into $($o.CondaPrefix)"
    }
    if (-not (Test-Path -LiteralPath (Join-Path $script:EnvPrefix 'conda-meta'))) {
        $envLine = "$($o.EnvName) at $($script:EnvPrefix) (will be created)"
    } elseif (Test-EnvMatchesLock) {
        $envLine = "$($o.EnvName) at $($script:EnvPrefix) (exists, matches the lock: kept)"
    } elseif (Test-EnvIsOurs $script:EnvPrefix) {
        $envLine = "$($o.EnvName) at $($script:EnvPrefix) (exists, made from other locks: the new env is built next to it " +
            "as $($script:EnvPrefix)-$(Get-WantedId), switched in after its test; the old one is kept for -Rollback)"
    } else {
        $envLine = "$($o.EnvName) at $($script:EnvPrefix) (exists, does not match the lock: replaced only with -Yes)"
    }
    $lines = @()
    if ($o.DryRun -eq 1) { $lines += 'llama-bootstrap install plan (dry run: nothing is changed)' }
    else { $lines += 'llama-bootstrap install plan' }
    $lines += "  platform:     $($script:Platform) (windows $($script:PlatformArch))"
    $lines += "  conda:        $condaLine"
    if (-not $script:CondaBin) {
        $lines += "  miniforge:    $($script:MiniforgeBaseUrl)/$($script:MiniforgeFile)"
        $lines += "  sha256:       $($script:MiniforgeSha256)"
    }
    $lines += "  environment:  $envLine"
    $lines += "  env prefix:   $($script:EnvWhy)"
    $lines += "  git:          $($script:GitBin)"
    $lines += "  disk:         $($script:DiskLine)"
    $lines += "  conda lock:   $($script:CondaLock)"
    if ($script:CondaMirror) { $lines += "  conda mirror: $($script:CondaMirror) (profile $($script:ProfileName))" }
    $lines += "  torch:        $($script:TorchKind) ($($script:TorchReason))"
    $lines += "  pip lock:     $($script:PipLock)"
    $lines += "  bootstrapper: pip install --no-deps --no-build-isolation --no-index $($script:RootDir)"
    if ($o.InstallOnly -eq 1) { $lines += "  hand-off:     none (-InstallOnly: the env's python is printed)" }
    else { $lines += "  hand-off:     <env python> $($handOff -join ' ')" }
    if ($o.Demo -eq 1 -and -not $script:CondaBin) {
        $lines += "  fallback:     if Miniforge cannot be downloaded: a Python $FallbackPython venv at $(Join-Path $script:StateDir "venvs\$($o.EnvName)-demo")"
        $lines += "                with $($script:FallbackLock)"
    }
    if ($script:LogFile) { $lines += "  log:          $($script:LogFile)" }
    foreach ($line in $lines) {
        Write-LogLine $line
        Write-Output $line
    }
}

# Download $Url to $Dest; https only (TLS 1.2+), http only for loopback test servers; retried.
function Invoke-Download([string]$Url, [string]$Dest) {
    Test-DownloadUrl $Url
    $lastError = $null
    for ($try = 1; $try -le $DownloadRetries + 1; $try++) {
        try {
            Invoke-WebRequest -Uri $Url -OutFile $Dest -UseBasicParsing -TimeoutSec 600
            return
        } catch {
            $lastError = $_
            Start-Sleep -Seconds $try
        }
    }
    throw $lastError
}

# Returns $false (after a warning) only when the download itself failed; every other failure stops.
function Install-Miniforge {
    $o = $script:Opt
    $url = "$($script:MiniforgeBaseUrl)/$($script:MiniforgeFile)"
    $installer = Join-Path $script:TmpDir $script:MiniforgeFile
    $part = "$installer.part"
    Assert-Command 'Invoke-WebRequest'
    Assert-Command 'Get-FileHash'
    Write-Say "no conda found: downloading Miniforge3 $MiniforgeVersion from $url"
    try {
        Invoke-Download $url $part
    } catch {
        Remove-Item -LiteralPath $part -Force -ErrorAction SilentlyContinue
        Write-Warn "could not download ${url}: $($_.Exception.Message)"
        return $false
    }
    $got = (Get-FileHash -LiteralPath $part -Algorithm SHA256).Hash.ToLowerInvariant()
    if ($got -ne $script:MiniforgeSha256) {
        Remove-Item -LiteralPath $part -Force -ErrorAction SilentlyContinue
        Stop-Install ("checksum mismatch for $($script:MiniforgeFile) from $($script:MiniforgeBaseUrl)`n" +
            "  want: $($script:MiniforgeSha256)`n  got:  $got`n" +
            'nothing was installed; check the mirror (LLAMA_BOOTSTRAP_MINIFORGE_URL / -Profile) and re-run')
    }
    Move-Item -LiteralPath $part -Destination $installer -Force
    Add-NewPath $script:MiniforgeTop $o.CondaPrefix 'miniforge'
    Write-Say "sha256 verified; installing Miniforge into $($o.CondaPrefix)"
    Write-LogLine "+ $installer /S /InstallationType=JustMe /RegisterPython=0 /AddToPath=0 /D=$($o.CondaPrefix)"
    # /D= must come last and unquoted (NSIS); Test-Prerequisites made sure the prefix has no space.
    $proc = Start-Process -FilePath $installer -Wait -PassThru -ArgumentList @(
        '/S', '/InstallationType=JustMe', '/RegisterPython=0', '/AddToPath=0', "/D=$($o.CondaPrefix)")
    if ($proc.ExitCode -ne 0) {
        # The installer's own log (NSIS writes it into the prefix) says why; show its end.
        $nsisLog = Join-Path $o.CondaPrefix 'install.log'
        if (Test-Path -LiteralPath $nsisLog -PathType Leaf) {
            foreach ($line in (Get-Content -LiteralPath $nsisLog -Tail 40)) {
                Write-LogLine "miniforge: $line"
                [Console]::Error.WriteLine("  miniforge: $line")
            }
            Stop-Install "the Miniforge installer failed (exit $($proc.ExitCode)); the end of its own log is above ($nsisLog)"
        }
        Stop-Install "the Miniforge installer failed (exit $($proc.ExitCode)) and left no log at $nsisLog"
    }
    $script:CondaBin = Join-Path $o.CondaPrefix 'Scripts\conda.exe'
    $script:CondaFoundVia = 'installed now'
    if (-not (Test-Path -LiteralPath $script:CondaBin)) { Stop-Install "Miniforge installed but $($script:CondaBin) is missing" }
    if ($o.InitShell -eq 1) {
        Invoke-InitShellRecorded
    } else {
        Write-Say 'your PowerShell profile was left alone (pass -InitShell to let conda edit it)'
    }
    # Ask the new conda (a ~\.condarc with envs_dirs applies to it too).
    Resolve-EnvPrefix
    Write-Say "the env goes to $($script:EnvPrefix) ($($script:EnvWhy))"
    return $true
}

# Only reached with -Demo, when no conda was found and Miniforge could not be downloaded.
function New-VenvFallback {
    $o = $script:Opt
    $found = ''
    foreach ($launcher in @('py', 'python')) {
        if (-not (Get-Command $launcher -ErrorAction SilentlyContinue)) { continue }
        $rest = @()
        if ($launcher -eq 'py') { $rest = @("-$FallbackPython") }
        $eap = $ErrorActionPreference
        $ErrorActionPreference = 'Continue'
        $out = & $launcher @rest -c 'import sys; print(str(sys.version_info[0]) + chr(46) + str(sys.version_info[1])); print(sys.executable)' 2> $null
        $code = $LASTEXITCODE
        $ErrorActionPreference = $eap
        if ($code -eq 0 -and $out -and $out[0] -eq $FallbackPython) { $found = $out[1]; break }
    }
    if (-not $found) {
        Stop-Install ("no conda, no Miniforge download, and no Python $FallbackPython for the -Demo venv fallback;`n" +
            "install conda (or let the Miniforge download through), or install Python $FallbackPython")
    }
    if (-not (Test-Path -LiteralPath $script:FallbackLock)) {
        Stop-Install "no venv-fallback lock for $($script:Platform): $($script:FallbackLock) is missing"
    }
    $script:VenvDir = Join-Path $script:StateDir "venvs\$($o.EnvName)-demo"
    Write-Warn '=================================================================================='
    Write-Warn 'NO CONDA: -Demo falls back to a plain Python venv. This is NOT the environment a'
    Write-Warn "real install uses (conda env from $(Split-Path -Leaf $script:CondaLock)); it only runs the demo."
    Write-Warn "  python:   $found ($FallbackPython)"
    Write-Warn "  venv:     $($script:VenvDir)"
    Write-Warn "  pip lock: $($script:FallbackLock)"
    Write-Warn '=================================================================================='
    $script:EnvKind = 'venv'
    $script:EnvPrefix = $script:VenvDir
    $script:PipLock = $script:FallbackLock
    Initialize-Venv $found
}

function Get-Sha256([string]$Path) {
    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

# Does the env at $Prefix (default: the name) match the locks? conda: its conda-lock stamp; both kinds:
# its pip-layer stamp, when it has one (an env from before that stamp counts as matching).
function Test-EnvMatchesLock([string]$Prefix = $script:EnvPrefix) {
    $meta = Get-MetaDir $Prefix
    if ($script:EnvKind -eq 'conda') {
        $stamp = Join-Path $meta $StampConda
        if (-not (Test-Path -LiteralPath $stamp)) { return $false }
        if ((Get-Stamp $stamp) -ne (Get-Sha256 $script:CondaLock)) { return $false }
    }
    $pip = Get-Stamp (Join-Path $meta $StampPip)
    return (-not $pip -or $pip -eq (Get-Sha256 $script:PipLock))
}

function New-CondaEnv {
    $o = $script:Opt
    $script:EnvPython = Join-Path $script:EnvPrefix 'python.exe'
    $lockName = Split-Path -Leaf $script:CondaLock
    if (Test-Path -LiteralPath (Join-Path $script:EnvPrefix 'conda-meta')) {
        if (Test-EnvMatchesLock) {
            Write-Say "env $($o.EnvName) already matches ${lockName}: keeping it"
            Use-ExistingEnv
            return
        }
        if (Test-EnvIsOurs $script:EnvPrefix) {
            New-EnvNextToIt
            return
        }
        if ($o.Yes -ne 1) {
            Stop-Install ("env $($o.EnvName) at $($script:EnvPrefix) exists but was not made from ${lockName};`n" +
                're-run with -Yes to replace it, or pick another name with -EnvName')
        }
        Write-Say "env $($o.EnvName) does not match the lock: removing it (-Yes)"
        Invoke-Ensure $script:CondaBin @('remove', '--yes', '--prefix', $script:EnvPrefix, '--all')
    }
    New-CondaEnvAt $script:EnvPrefix
}

function Install-PipLayer {
    Write-Say "installing the pip layer $(Split-Path -Leaf $script:PipLock) (every file checked against its sha256)"
    $a = @('-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--require-hashes',
        '--no-deps', '--only-binary', ':all:', '-r', $script:PipLock)
    if ((Split-Path -Leaf $script:PipLock) -eq 'win-64-cuda.txt') {
        # The CUDA build of torch for Windows exists only there (see $TorchCudaIndex above).
        $a += @('--extra-index-url', $TorchCudaIndex)
    }
    Invoke-Ensure $script:EnvPython $a
}

function Install-Bootstrapper {
    Write-Say "installing the bootstrapper from $($script:RootDir)"
    # Its dependencies all came from the hashed pip layer; --no-index: nothing else is downloaded.
    Invoke-Ensure $script:EnvPython @('-m', 'pip', 'install', '--disable-pip-version-check', '--no-input',
        '--no-deps', '--no-build-isolation', '--no-index', $script:RootDir)
}

# The CLI's exit code is the installer's: 1 a check or step failed, 2 bad input, 3 locked, 130 interrupted.
function Invoke-HandOff {
    $handOff = Get-HandOffArguments
    Write-Say "handing off: $($script:EnvPython) $($handOff -join ' ')"
    Write-LogLine "+ $($script:EnvPython) $($handOff -join ' ')"
    # The CLI writes UTF-8 (PYTHONUTF8); when PowerShell relays its output, it must read UTF-8 too.
    $oldEncoding = $null
    try {
        $oldEncoding = [Console]::OutputEncoding
        [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false
    } catch { $oldEncoding = $null }
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $script:EnvPython @handOff
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
        if ($oldEncoding) { try { [Console]::OutputEncoding = $oldEncoding } catch { } }
    }
    Write-LogLine "hand-off exited with $code"
    if ($code -ne 0) {
        if (Test-Interrupted $code) { $code = 130 }
        $meaning = switch ($code) {
            1 { 'a check or step failed' }
            2 { 'bad input' }
            3 { 'another llama-bootstrap run holds the lock' }
            130 { 'interrupted' }
            default { 'unexpected' }
        }
        Stop-Install "llama-bootstrap $($handOff[2]) failed (exit $($code): $meaning); its messages are above$($script:UpdateNote)" $code
    }
    Write-Say "done. The environment is $($script:EnvPrefix); log: $($script:LogFile)"
}

# ---- the life of an install: the receipt, updates, -Rollback, -Uninstall ----------------------
# docs\installers.md "The life of an install". Each function mirrors install.sh's of the same purpose
# (the pairs are listed in tests\lifecycle\test_installers_static.py).

# The receipt is <the CLI's state folder>\receipt.json, the file `llama-bootstrap` writes too
# (bootstrap\receipt.py): LLAMA_BOOTSTRAP_STATE_DIR (relative: to the manifest's folder), else
# .llama-bootstrap next to the manifest; the CLI finds it from the same manifest.
function Get-ReceiptPath {
    $o = $script:Opt
    $root = (Resolve-Path -LiteralPath (Split-Path -Parent (Convert-Path -LiteralPath $o.Manifest))).ProviderPath
    $dir = Get-EnvOr 'LLAMA_BOOTSTRAP_STATE_DIR' ''
    $dir = $dir.TrimEnd('\', '/')
    if (-not $dir) { $dir = Join-Path $root '.llama-bootstrap' }
    elseif (-not [System.IO.Path]::IsPathRooted($dir)) { $dir = Join-Path $root $dir }
    $script:Receipt = Join-Path $dir 'receipt.json'
}

# The topmost missing folder on the way to $Path ($Path itself when only it is missing); '' when it exists.
function Get-FirstMissing([string]$Path) {
    $top = ''
    $p = $Path
    while ($p -and -not (Test-Path -LiteralPath $p)) {
        $top = $p
        $parent = Split-Path -Parent $p
        if (-not $parent -or $parent -eq $p) { break }
        $p = $parent
    }
    return $top
}

function Read-ReceiptEntries {
    if (-not $script:Receipt -or -not (Test-Path -LiteralPath $script:Receipt -PathType Leaf)) { return @() }
    try {
        $doc = [System.IO.File]::ReadAllText($script:Receipt, [System.Text.Encoding]::UTF8) | ConvertFrom-Json
    } catch {
        Stop-Install "the receipt $($script:Receipt) cannot be read ($($_.Exception.Message)); restore it or move it away"
    }
    if (-not $doc -or $doc.receipt -ne 1) {
        Stop-Install "the receipt $($script:Receipt) is not a llama-bootstrap receipt (version 1); restore it or move it away"
    }
    return @($doc.entries | Where-Object { $_ })
}

# The layout of bootstrap\receipt.py: one entry per line (written UTF-8 without a byte-order mark).
function Write-ReceiptEntries([object[]]$Entries) {
    $lines = @()
    foreach ($e in $Entries) {
        if ($e.when -is [datetime]) { $e.when = $e.when.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ') }
        $lines += '    ' + ($e | ConvertTo-Json -Compress -Depth 5)
    }
    $body = ''
    if ($lines.Count) { $body = ($lines -join ",`n") + "`n" }
    $text = "{`n  `"receipt`": 1,`n  `"entries`": [`n" + $body + "  ]`n}`n"
    $folder = Split-Path -Parent $script:Receipt
    New-Item -ItemType Directory -Force -Path $folder | Out-Null
    $tmp = Join-Path $folder ('.receipt.json.' + [System.Guid]::NewGuid().ToString('N') + '.tmp')
    [System.IO.File]::WriteAllText($tmp, $text, (New-Object System.Text.UTF8Encoding $false))
    Move-Item -LiteralPath $tmp -Destination $script:Receipt -Force
}

# Add-ReceiptEntry PATH KIND created|found [EXTRA]: record PATH unless it is recorded already (the first
# record wins). EXTRA: a hashtable of more fields.
function Add-ReceiptEntry([string]$Path, [string]$Kind, [string]$Status, [hashtable]$Extra = @{}) {
    if (-not $script:Receipt) { return }
    $entries = @(Read-ReceiptEntries)
    foreach ($e in $entries) { if ($e.path -eq $Path) { return } }
    $entry = [ordered]@{ path = $Path; kind = $Kind; status = $Status
        when = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ'); by = 'installer' }
    foreach ($key in ($Extra.Keys | Sort-Object)) { $entry[$key] = $Extra[$key] }
    Write-ReceiptEntries ($entries + @([pscustomobject]$entry))
}

# created, found or '': what the receipt says of PATH.
function Get-ReceiptStatus([string]$Path) {
    foreach ($e in @(Read-ReceiptEntries)) { if ($e.path -eq $Path) { return "$($e.status)" } }
    return ''
}

function Get-ReceiptPaths([string[]]$Kinds) {
    return @(Read-ReceiptEntries | Where-Object { $Kinds -ccontains $_.kind } | ForEach-Object { "$($_.path)" })
}

# Add-NewPath TOP PATH KIND [EXTRA]: PATH as found when TOP is '' (it was there before), else as created,
# with every folder from TOP down to it as a created "folder". Called before the path is made.
function Add-NewPath([string]$Top, [string]$Path, [string]$Kind, [hashtable]$Extra = @{}) {
    if (-not $Top) { Add-ReceiptEntry $Path $Kind 'found' $Extra; return }
    Add-ReceiptEntry $Path $Kind 'created' $Extra
    $p = $Path
    while ($p -ne $Top) {
        $parent = Split-Path -Parent $p
        if (-not $parent -or $parent -eq $p) { break }
        $p = $parent
        Add-ReceiptEntry $p 'folder' 'created'
    }
}

function Get-PipCacheDir {
    $dir = Get-EnvOr 'PIP_CACHE_DIR' ''
    if ($dir) { return $dir }
    return Join-Path $env:LOCALAPPDATA 'pip\Cache'
}

# Before anything is written: where the receipt goes (the state folder is recorded, and made), and what
# exists already of the paths this run may create.
function Start-Receipt {
    $o = $script:Opt
    Get-ReceiptPath
    $folder = Split-Path -Parent $script:Receipt
    $top = Get-FirstMissing $folder
    if ($o.Log) { $script:LogTop = Get-FirstMissing (Split-Path -Parent $o.Log) }
    else { $script:LogTop = Get-FirstMissing (Join-Path $script:StateDir 'logs') }
    $script:LogExisted = [bool]($o.Log -and (Test-Path -LiteralPath $o.Log))
    $script:BuildBefore = @(Get-ChildItem -LiteralPath $script:RootDir -Force | ForEach-Object { $_.Name })
    $script:PipCacheTop = Get-FirstMissing (Get-PipCacheDir)
    $script:CondaDirTop = Get-FirstMissing (Join-Path $env:USERPROFILE '.conda')
    $script:MiniforgeTop = Get-FirstMissing $o.CondaPrefix
    Add-NewPath $top $folder 'state'
}

function Add-LogToReceipt {
    Add-NewPath $script:LogTop (Split-Path -Parent $script:LogFile) 'folder'
    if ($script:LogExisted) { Add-ReceiptEntry $script:LogFile 'log' 'found' } else { Add-ReceiptEntry $script:LogFile 'log' 'created' }
}

# What installing left that it did not set out to make: pip's build of the bootstrapper in the release
# folder (build\, *.egg-info), pip's cache and ~\.conda when this install created them.
function Add-Leftovers {
    foreach ($item in @(Get-ChildItem -LiteralPath $script:RootDir -Force -Directory)) {
        if ($script:BuildBefore -contains $item.Name) { continue }
        if ($item.Name -eq 'build' -or $item.Name -like '*.egg-info') { Add-ReceiptEntry $item.FullName 'build' 'created' }
    }
    $cache = Get-PipCacheDir
    if ($script:PipCacheTop -and (Test-Path -LiteralPath $cache)) { Add-NewPath $script:PipCacheTop $cache 'cache' }
    $condaDir = Join-Path $env:USERPROFILE '.conda'
    if ($script:CondaDirTop -and (Test-Path -LiteralPath $condaDir)) { Add-NewPath $script:CondaDirTop $condaDir 'conda-dir' }
}

# `llama-bootstrap demo` works in .\llama-bootstrap-demo (bootstrap\demo\scenario.py, DEFAULT_WORKDIR).
function Add-DemoWorkdir {
    if ($script:Opt.Demo -ne 1) { return }
    $dir = Join-Path (Get-Location).ProviderPath 'llama-bootstrap-demo'
    Add-NewPath (Get-FirstMissing $dir) $dir 'demo'
}

# A conda that was found is recorded as found (never removed); Miniforge installed now was recorded by
# Install-Miniforge before its installer ran.
function Add-FoundConda {
    if (-not $script:CondaBin -or $script:CondaFoundVia -eq 'installed now') { return }
    $base = Split-Path -Parent (Split-Path -Parent $script:CondaBin)
    if (Test-Path -LiteralPath (Join-Path $base 'conda-meta')) { Add-ReceiptEntry $base 'miniforge' 'found' }
}

# `conda init powershell` with -InitShell: a profile conda put its `#region conda initialize` block into
# (it had none before) is recorded with its sha256 before the edit, so uninstall takes out exactly that.
function Invoke-InitShellRecorded {
    $documents = [Environment]::GetFolderPath('MyDocuments')
    $profiles = @((Join-Path $documents 'WindowsPowerShell\profile.ps1'), (Join-Path $documents 'PowerShell\profile.ps1'))
    $before = @{}
    foreach ($file in $profiles) {
        $info = @{ existed = $false; sha = ''; had = $false; top = (Get-FirstMissing (Split-Path -Parent $file)) }
        if (Test-Path -LiteralPath $file -PathType Leaf) {
            $info.existed = $true
            $info.sha = Get-Sha256 $file
            $info.had = [bool](Select-String -LiteralPath $file -Pattern '^#region conda initialize\s*$' -Quiet)
        }
        $before[$file] = $info
    }
    Invoke-Ensure $script:CondaBin @('init', 'powershell')
    foreach ($file in $profiles) {
        $info = $before[$file]
        if ($info.had -or -not (Test-Path -LiteralPath $file -PathType Leaf)) { continue }
        if (-not (Select-String -LiteralPath $file -Pattern '^#region conda initialize\s*$' -Quiet)) { continue }
        $extra = @{ file_existed = $info.existed }
        if ($info.sha) { $extra.sha256_before = $info.sha }
        Add-ReceiptEntry $file 'shell-startup-edit' 'created' $extra
        if ($info.top) { Add-NewPath $info.top (Split-Path -Parent $file) 'folder' }
    }
}

# Envs: the conda env (EnvKind conda: stamps in conda-meta\) or the -Demo venv (EnvKind venv: stamps at its
# top). An env's id (the name of an update's slot, <name>-<id>) is the first 12 hex digits of
# sha256("<conda sha>`n<pip sha>`n"), as in install.sh and bootstrap\status.py.
function Get-MetaDir([string]$Prefix) {
    if ($script:EnvKind -eq 'conda') { return Join-Path $Prefix 'conda-meta' }
    return $Prefix
}

function Get-EnvPython([string]$Prefix) {
    if ($script:EnvKind -eq 'conda') { return Join-Path $Prefix 'python.exe' }
    return Join-Path $Prefix 'Scripts\python.exe'
}

function Get-Stamp([string]$Path) {
    if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) { return '' }
    $line = Get-Content -LiteralPath $Path -TotalCount 1
    if (-not $line) { return '' }
    return (("$line").Trim() -split '\s+')[0]
}

function Get-TextSha256([string]$Text) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        $bytes = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text))
    } finally {
        $sha.Dispose()
    }
    return -join ($bytes | ForEach-Object { $_.ToString('x2') })
}

function Get-EnvId([string]$Prefix) {
    $meta = Get-MetaDir $Prefix
    $conda = ''
    if ($script:EnvKind -eq 'conda') { $conda = Get-Stamp (Join-Path $meta $StampConda) }
    return (Get-TextSha256 ("$conda`n" + (Get-Stamp (Join-Path $meta $StampPip)) + "`n")).Substring(0, 12)
}

function Get-WantedId {
    $conda = ''
    if ($script:EnvKind -eq 'conda') { $conda = Get-Sha256 $script:CondaLock }
    return (Get-TextSha256 ("$conda`n" + (Get-Sha256 $script:PipLock) + "`n")).Substring(0, 12)
}

# Made by our installer: it carries our lock stamp (conda), or it is our venv.
function Test-EnvIsOurs([string]$Prefix) {
    return ($script:EnvKind -eq 'venv' -or (Test-Path -LiteralPath (Join-Path (Get-MetaDir $Prefix) $StampConda)))
}

# Where the env at $Prefix was built (it only works there); envs from before the pointer: at the name.
function Get-EnvHome([string]$Prefix) {
    $file = Join-Path (Get-MetaDir $Prefix) $HomePointer
    if (Test-Path -LiteralPath $file -PathType Leaf) { return "$(Get-Content -LiteralPath $file -TotalCount 1)".Trim() }
    return $script:EnvPrefix
}

function Test-Junction([string]$Path) {
    if (-not (Test-Path -LiteralPath $Path)) { return $false }
    return [bool]((Get-Item -LiteralPath $Path -Force).Attributes -band [System.IO.FileAttributes]::ReparsePoint)
}

# What the name ($script:EnvPrefix) leads to: the env itself, or through a junction an update's slot.
function Get-CurrentEnv {
    $name = $script:EnvPrefix
    if (Test-Junction $name) { return "$(@((Get-Item -LiteralPath $name -Force).Target)[0])" }
    if (Test-Path -LiteralPath $name -PathType Container) { return $name }
    return ''
}

function Get-EnvExtra {
    $extra = @{ name = $script:EnvPrefix; pip_lock = $script:PipLock }
    if ($script:EnvKind -eq 'conda') { $extra.conda_lock = $script:CondaLock }
    return $extra
}

function Add-EnvToReceipt([string]$Prefix) {
    $kind = 'env'
    if ($script:EnvKind -eq 'venv') { $kind = 'venv' }
    Add-NewPath (Get-FirstMissing $Prefix) $Prefix $kind (Get-EnvExtra)
}

# The env at the name matches the locks: it is used as it is (through the junction's target).
function Use-ExistingEnv {
    Add-EnvToReceipt $script:EnvPrefix
    $script:EnvTarget = Get-CurrentEnv
    $script:EnvPython = Get-EnvPython $script:EnvTarget
}

# Create the conda env at $Prefix from the lock (recorded first), stamped with the lock's sha256.
function New-CondaEnvAt([string]$Prefix) {
    $o = $script:Opt
    Add-EnvToReceipt $Prefix
    $lockName = Split-Path -Leaf $script:CondaLock
    $lock = $script:CondaLock
    if ($script:CondaMirror) {
        # Plain string prefixes (no regular expression); UTF-8 without a BOM, as conda reads it.
        $lock = Join-Path $script:TmpDir $lockName
        Write-Say "profile $($script:ProfileName): fetching conda packages from $($script:CondaMirror)"
        $mirror = $script:CondaMirror.TrimEnd('/')
        $text = foreach ($line in [System.IO.File]::ReadAllLines($script:CondaLock)) {
            if ($line.StartsWith("$CondaForgeChannel/", [System.StringComparison]::Ordinal)) { $mirror + $line.Substring($CondaForgeChannel.Length) } else { $line }
        }
        [System.IO.File]::WriteAllLines($lock, [string[]]$text)
    }
    Write-Say "creating env $($o.EnvName) at $Prefix from $lockName"
    Invoke-Ensure $script:CondaBin @('create', '--yes', '--prefix', $Prefix, '--file', $lock)
    $python = Get-EnvPython $Prefix
    if (-not (Test-Path -LiteralPath $python)) { Stop-Install "conda created $($o.EnvName) but $python is missing" }
    Set-Content -LiteralPath (Join-Path $Prefix "conda-meta\$StampConda") -Value "$(Get-Sha256 $script:CondaLock)  $lockName" -Encoding ASCII
    Set-Content -LiteralPath (Join-Path $Prefix "conda-meta\$HomePointer") -Value $Prefix -Encoding UTF8
    $script:EnvTarget = $Prefix
    $script:EnvPython = $python
}

function New-VenvAt([string]$Prefix) {
    Add-EnvToReceipt $Prefix
    Invoke-Ensure $script:FallbackBasePython @('-m', 'venv', $Prefix)
    Set-Content -LiteralPath (Join-Path $Prefix $HomePointer) -Value $Prefix -Encoding UTF8
    $script:EnvTarget = $Prefix
    $script:EnvPython = Get-EnvPython $Prefix
}

# The venv fallback: kept when it matches the lock (a venv from before the stamps counts as matching),
# built next to it when the lock changed.
function Initialize-Venv([string]$BasePython) {
    $script:FallbackBasePython = $BasePython
    if (Test-Path -LiteralPath (Get-EnvPython $script:VenvDir)) {
        if (Test-EnvMatchesLock $script:VenvDir) { Use-ExistingEnv } else { New-EnvNextToIt }
        return
    }
    New-VenvAt $script:VenvDir
}

# The locks changed: the new env is built next to the current one, as <name>-<id>; the current one is
# used until the new one has passed its test (Complete-Update).
function New-EnvNextToIt {
    $slot = "$($script:EnvPrefix)-$(Get-WantedId)"
    $script:UpdateFrom = Get-CurrentEnv
    if ((Test-Path -LiteralPath $slot -PathType Container) -and -not (Test-Junction $slot) -and (Test-EnvMatchesLock $slot)) {
        if ((Get-EnvHome $slot) -ne $slot) {
            Write-Say "an env for these locks was in use before and is kept at ${slot}: switching it back in"
            Switch-Env $slot
            Use-ExistingEnv
            return
        }
        Write-Say "an env for these locks was built next to the current one before: using $slot"
        $script:EnvTarget = $slot
        $script:EnvPython = Get-EnvPython $slot
    } else {
        if (Test-Path -LiteralPath $slot) {
            if ((Get-ReceiptStatus $slot) -ne 'created') {
                Stop-Install "$slot exists but is not a finished env for these locks; move it away and re-run"
            }
            Write-Say "removing ${slot}: an unfinished env from an interrupted update"
            Remove-Tree $slot
        }
        Write-Say "the locks changed: building the new env next to the current one ($($script:UpdateFrom)), at $slot;"
        Write-Say 'the current one stays in use until the new one has passed its test'
        if ($script:EnvKind -eq 'conda') { New-CondaEnvAt $slot } else { New-VenvAt $slot }
    }
    $script:UpdateSlot = $slot
    $script:UpdateNote = "; the new env $slot was NOT switched in: $($script:EnvPrefix) still leads to $($script:UpdateFrom)"
}

function Set-PipStamp {
    Set-Content -LiteralPath (Join-Path (Get-MetaDir $script:EnvTarget) $StampPip) `
        -Value "$(Get-Sha256 $script:PipLock)  $(Split-Path -Leaf $script:PipLock)" -Encoding ASCII
}

# With an update pending: the new env must import the bootstrapper, torch and transformers.
function Test-NewEnv {
    if (-not $script:UpdateSlot) { return }
    Write-Say 'testing the new env: importing the bootstrapper, torch and transformers'
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $script:EnvPython -c 'import bootstrap.cli, torch, transformers'
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
    }
    if ($code -ne 0) { Stop-Install "the new env at $($script:UpdateSlot) cannot import its libraries$($script:UpdateNote)" }
}

# A folder tree removed without following junctions or symlinks inside it (each is removed as a link).
function Remove-Tree([string]$Path) {
    $item = Get-Item -LiteralPath $Path -Force
    if ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint) {
        if ($item.PSIsContainer) { [System.IO.Directory]::Delete($Path, $false) } else { [System.IO.File]::Delete($Path) }
        return
    }
    if (-not $item.PSIsContainer) {
        $item.Attributes = [System.IO.FileAttributes]::Normal
        [System.IO.File]::Delete($Path)
        return
    }
    foreach ($child in @(Get-ChildItem -LiteralPath $Path -Force)) { Remove-Tree $child.FullName }
    [System.IO.Directory]::Delete($Path, $false)
}

# Make the name ($script:EnvPrefix) lead to the env at $Target, and record the env it led to as the
# previous one. An env is only ever used at the prefix it was built at: one built at the name is moved
# aside ("parked" as <name>-<id>) while another is switched in through a junction, and moved back.
function Switch-Env([string]$Target) {
    $name = $script:EnvPrefix
    $current = Get-CurrentEnv
    $currentId = ''
    if ($current) { $currentId = Get-EnvId $current }
    if ((Get-EnvHome $Target) -eq $name) {
        if (Test-Junction $name) { [System.IO.Directory]::Delete($name, $false) }
        if (Test-Path -LiteralPath $name) { Stop-Install "cannot switch $name back: it is not a junction" }
        [System.IO.Directory]::Move($Target, $name)
        $Target = $name
    } else {
        if ((Test-Path -LiteralPath $name -PathType Container) -and -not (Test-Junction $name)) {
            $park = "$name-$currentId"
            if (Test-Path -LiteralPath $park) { Stop-Install "cannot move the env at $name aside: $park exists" }
            $status = Get-ReceiptStatus $name
            if (-not $status) { $status = 'found' }
            [System.IO.Directory]::Move($name, $park)
            $kind = 'env'
            if ($script:EnvKind -eq 'venv') { $kind = 'venv' }
            Add-ReceiptEntry $park $kind $status (Get-EnvExtra)
        }
        if (Test-Junction $name) { [System.IO.Directory]::Delete($name, $false) }
        New-Item -ItemType Junction -Path $name -Target $Target | Out-Null
    }
    if ($currentId) { Set-Content -LiteralPath (Join-Path (Get-MetaDir $Target) $PreviousPointer) -Value $currentId -Encoding ASCII }
}

# After the new env passed its test: switch it in; keep the one it replaces (for -Rollback); remove older
# envs of ours (made by us, neither the current one nor its previous one).
function Complete-Update {
    if (-not $script:UpdateSlot) { return }
    Switch-Env $script:UpdateSlot
    $script:UpdateNote = ''
    Write-Say "switched: $($script:EnvPrefix) now leads to the new env $($script:UpdateSlot); the env it replaced is kept (-Rollback switches back)"
    Remove-OldEnvs
}

function Remove-OldEnvs {
    $current = Get-CurrentEnv
    $currentId = Get-EnvId $current
    $previous = Get-Stamp (Join-Path (Get-MetaDir $current) $PreviousPointer)
    $parent = Split-Path -Parent $script:EnvPrefix
    $leaf = Split-Path -Leaf $script:EnvPrefix
    foreach ($candidate in @(Get-ChildItem -LiteralPath $parent -Force -Directory | Where-Object { $_.Name -like "$leaf-*" })) {
        $id = $candidate.Name.Substring($leaf.Length + 1)
        if ($id -cnotmatch '^[0-9a-f]{12}$' -or (Test-Junction $candidate.FullName)) { continue }
        if ((Get-EnvId $candidate.FullName) -ne $id -or $id -eq $currentId -or $id -eq $previous) { continue }
        if ((Get-ReceiptStatus $candidate.FullName) -ne 'created') { continue }
        Write-Say "removing $($candidate.FullName): an env of an earlier update (the previous one is kept for -Rollback)"
        try { Remove-Tree $candidate.FullName } catch { Write-Warn "could not remove $($candidate.FullName): $($_.Exception.Message)" }
    }
}

# -Rollback: switch the name back to the env it led to before the last switch (and forward again).
function Invoke-Rollback {
    $o = $script:Opt
    $venv = Join-Path $script:StateDir "venvs\$($o.EnvName)-demo"
    if (Test-Path -LiteralPath $o.Manifest -PathType Leaf) { Get-ReceiptPath }
    if (($o.Demo -eq 1 -or -not $script:CondaBin) -and (Test-Path -LiteralPath $venv -PathType Container)) {
        $script:EnvKind = 'venv'; $script:EnvPrefix = $venv; $script:PipLock = $script:FallbackLock
    } elseif (-not $script:CondaBin -or -not (Test-Path -LiteralPath (Join-Path $script:EnvPrefix 'conda-meta'))) {
        Stop-Install "nothing to roll back: no env $($o.EnvName) at $($script:EnvPrefix) and no venv at $venv"
    }
    $current = Get-CurrentEnv
    $previous = Get-Stamp (Join-Path (Get-MetaDir $current) $PreviousPointer)
    if (-not $previous) {
        Stop-Install "no previous env is recorded for $($script:EnvPrefix) (one is kept when an update switches to a new env)"
    }
    $target = "$($script:EnvPrefix)-$previous"
    if (-not (Test-Path -LiteralPath $target -PathType Container) -or (Test-Junction $target) -or (Get-EnvId $target) -ne $previous) {
        Stop-Install "the previous env of $($script:EnvPrefix) is gone (it was at $target)"
    }
    if ($o.DryRun -eq 1) {
        Write-Say "dry run: -Rollback would switch $($script:EnvPrefix) from $current to $target"
        return
    }
    Switch-Env $target
    Write-Say "rolled back: $($script:EnvPrefix) leads to $(Get-CurrentEnv) again; the env it replaced is kept (-Rollback switches forward again)"
    Write-Output (Get-EnvPython (Get-CurrentEnv))
}

# -Uninstall: the CLI removes what the receipt says was created (bootstrap\uninstall.py). Windows cannot
# delete the python.exe it runs on: the CLI leaves the entries holding it in the receipt, and this
# removes them (and the receipt) after it has exited.
function Invoke-Uninstall {
    $o = $script:Opt
    Get-ReceiptPath
    if (-not (Test-Path -LiteralPath $script:Receipt -PathType Leaf)) {
        Stop-Install ("no install receipt at $($script:Receipt): -Uninstall removes only what a receipt records as created;`n" +
            'pass the -Manifest (or LLAMA_BOOTSTRAP_STATE_DIR) the install was made with: its state folder holds receipt.json')
    }
    $python = ''
    foreach ($path in (Get-ReceiptPaths @('env', 'venv'))) {
        foreach ($candidate in @((Join-Path $path 'python.exe'), (Join-Path $path 'Scripts\python.exe'))) {
            if (-not (Test-Path -LiteralPath $candidate -PathType Leaf)) { continue }
            $eap = $ErrorActionPreference
            $ErrorActionPreference = 'Continue'
            & $candidate -c 'import bootstrap.uninstall' *> $null
            $code = $LASTEXITCODE
            $ErrorActionPreference = $eap
            if ($code -eq 0) { $python = $candidate; break }
        }
        if ($python) { break }
    }
    if (-not $python) {
        Stop-Install ("no env listed in $($script:Receipt) can run llama-bootstrap any more; run ``llama-bootstrap uninstall " +
            "--manifest $($o.Manifest)`` from any environment that has llama-bootstrap (pip install $($script:RootDir))")
    }
    $a = @('-m', 'bootstrap', 'uninstall', '--manifest', $o.Manifest)
    if ($o.DryRun -eq 1) { $a += '--dry-run' }
    if ($o.Yes -eq 1) { $a += '--yes' }
    Write-Say "uninstalling: $python $($a -join ' ')"
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $python @a
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
    }
    if ($code -ne 0) { Stop-Install "llama-bootstrap uninstall failed (exit $($code)); its messages are above" $code }
    if ($o.DryRun -eq 1 -or -not (Test-Path -LiteralPath $script:Receipt -PathType Leaf)) { return }
    Remove-LeftForInstaller
}

# What the CLI left for this script (marked left_for_installer: they hold the python it ran on), then,
# when nothing else recorded remains, the state folder with the receipt and the empty folders around.
function Remove-LeftForInstaller {
    $left = @()
    foreach ($e in @(Read-ReceiptEntries)) {
        if ($e.status -eq 'created' -and $e.PSObject.Properties['left_for_installer'] -and $e.left_for_installer) {
            if (-not (Test-Path -LiteralPath $e.path)) { continue }
            Write-Say "removing $($e.path)"
            try { Remove-Tree $e.path; continue } catch { Write-Warn "could not remove $($e.path): $($_.Exception.Message)" }
        }
        $left += $e
    }
    $remaining = @($left | Where-Object { $_.status -eq 'created' -and @('folder', 'state') -cnotcontains $_.kind })
    if ($remaining.Count) {
        Write-ReceiptEntries $left
        Stop-Install "$($remaining.Count) recorded path(s) could not be removed; the receipt $($script:Receipt) keeps them"
    }
    foreach ($e in $left) {
        if ($e.status -ne 'created' -or -not (Test-Path -LiteralPath $e.path)) { continue }
        if ($e.kind -eq 'state') { Write-Say "removing $($e.path)"; Remove-Tree $e.path }
        elseif (-not (Get-ChildItem -LiteralPath $e.path -Force | Select-Object -First 1)) { [System.IO.Directory]::Delete($e.path, $false) }
    }
    if (Test-Path -LiteralPath $script:Receipt -PathType Leaf) { [System.IO.File]::Delete($script:Receipt) }
}

function Remove-TempDir {
    if ($script:TmpDir -and (Test-Path -LiteralPath $script:TmpDir)) {
        Remove-Item -LiteralPath $script:TmpDir -Recurse -Force -ErrorAction SilentlyContinue
    }
}

# ---- offline install from a bundle (`llama-bootstrap bundle`; the format: bootstrap\bundle.py) --------
# install.sh <-> install.ps1: from_bundle = Install-FromBundle, verify_bundle = Test-Bundle,
# bundle_field = Get-BundleField, isolate_pip = Set-PipIsolation, bundle_env = New-BundleEnv,
# install_bundle_miniforge = Install-BundleMiniforge, undo_bundle = Undo-Bundle.
$BundleNameRegex = '^[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~-]*(/[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~-]*)*$'

# A top-level value of BUNDLE.json.
function Get-BundleField([string]$Path, [string]$Name) {
    $index = Get-Content -LiteralPath $Path -Raw -Encoding UTF8 | ConvertFrom-Json
    return "$($index.$Name)"
}

# Remove what Test-Bundle made (the temp folder, and the folders it had to create) when it did not pass.
function Undo-Bundle {
    if ($script:BundleUndo -and (Test-Path -LiteralPath $script:BundleUndo)) {
        Remove-Item -LiteralPath $script:BundleUndo -Recurse -Force -ErrorAction SilentlyContinue
    }
    $script:BundleUndo = ''
}

# Run tar (Windows 10+ ships bsdtar as tar.exe); its output lines, or a stop naming the failure.
function Invoke-Tar([string[]]$Arguments, [string]$What) {
    $eap = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $out = & tar @Arguments 2>&1
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $eap
    }
    if ($code -ne 0) { Stop-Install "$What failed (tar exit $code): $($out | Select-Object -Last 1)" }
    return @($out | ForEach-Object { "$_" })
}

# Check the bundle and unpack it to $script:BundleDir. Until every member has matched SHA256SUMS nothing but a
# temp folder (removed again on failure) is written. Sets BundleId, BundleDir, BundleIndex.
function Test-Bundle([string]$File) {
    Assert-Command 'tar'
    if (-not (Test-Path -LiteralPath $File -PathType Leaf)) {
        Stop-Install "bundle not found: $File (pass -FromBundle FILE or set LLAMA_BOOTSTRAP_FROM_BUNDLE)"
    }
    $File = (Resolve-Path -LiteralPath $File).Path
    Write-Say "checking the bundle $File (nothing is changed before every member matches its sha256)"
    $listing = Invoke-Tar @('-tvf', $File) "listing $File"
    $bad = $listing | Where-Object { -not $_.StartsWith('-') } | Select-Object -First 1
    if ($bad) { Stop-Install "the bundle holds something other than a regular file (links, devices and folders are refused); nothing was changed:`n  $bad" }
    $names = Invoke-Tar @('-tf', $File) "listing $File"
    $bad = $names | Where-Object { $_ -cnotmatch $BundleNameRegex -or $_ -match '(^|/)\.\.?(/|$)' } | Select-Object -First 1
    if ($bad) { Stop-Install "the bundle has an unsafe member name '$bad' (absolute, '..' or odd characters); nothing was changed" }
    $bad = $names | Group-Object | Where-Object { $_.Count -gt 1 } | Select-Object -First 1
    if ($bad) { Stop-Install "the bundle holds '$($bad.Name)' twice; nothing was changed" }
    if (($names -cnotcontains 'SHA256SUMS') -or ($names -cnotcontains 'BUNDLE.json')) {
        Stop-Install "$File is not a llama-bootstrap bundle (no SHA256SUMS / BUNDLE.json)"
    }
    $peek = Join-Path ([System.IO.Path]::GetTempPath()) ('llama-bootstrap-sums.' + [System.Guid]::NewGuid().ToString('N'))
    New-Item -ItemType Directory -Force -Path $peek | Out-Null
    try {
        Invoke-Tar @('-xf', $File, '-C', $peek, 'SHA256SUMS') "reading SHA256SUMS from $File" | Out-Null
        $script:BundleId = Get-Sha256 (Join-Path $peek 'SHA256SUMS')
    } finally {
        Remove-Item -LiteralPath $peek -Recurse -Force -ErrorAction SilentlyContinue
    }
    $script:BundleDir = Join-Path $script:StateDir "bundles\$($script:BundleId.Substring(0, 16))"
    $script:BundleIndex = Join-Path $script:BundleDir 'BUNDLE.json'
    if (Test-Path -LiteralPath $script:BundleDir -PathType Container) {
        Write-Say "bundle $($script:BundleId.Substring(0, 16)) is already unpacked (and was verified) at $($script:BundleDir)"
        return
    }
    # Disk: the unpacked members take at most the size of the archive.
    $need = (Get-Item -LiteralPath $File).Length
    $probe = Split-Path -Parent $script:BundleDir
    while (-not (Test-Path -LiteralPath $probe -PathType Container)) { $probe = Split-Path -Parent $probe }
    $free = ([System.IO.DriveInfo]::new([System.IO.Path]::GetPathRoot($probe))).AvailableFreeSpace
    if ($free -lt $need) {
        $needMiB = [math]::Ceiling($need / 1048576)
        $freeMiB = [math]::Floor($free / 1048576)
        Stop-Install "not enough disk at $probe to unpack the bundle: need $needMiB MiB, $freeMiB MiB free; nothing was changed"
    }
    # Unpack into a temp folder next to the target; on failure it goes again, with the folders made for it.
    $parent = Split-Path -Parent $script:BundleDir
    $script:BundleUndo = ''
    if (-not (Test-Path -LiteralPath $parent -PathType Container)) {
        $script:BundleUndo = $parent
        while (-not (Test-Path -LiteralPath (Split-Path -Parent $script:BundleUndo) -PathType Container)) {
            $script:BundleUndo = Split-Path -Parent $script:BundleUndo
        }
    }
    try {
        New-Item -ItemType Directory -Force -Path $parent | Out-Null
        $stage = Join-Path $parent ('.unpack-' + [System.Guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory -Force -Path $stage | Out-Null
        if (-not $script:BundleUndo) { $script:BundleUndo = $stage }
        Invoke-Tar @('-xf', $File, '-C', $stage) "unpacking $File" | Out-Null
        $sums = @{}
        foreach ($line in Get-Content -LiteralPath (Join-Path $stage 'SHA256SUMS') -Encoding ASCII) {
            if ($line -notmatch '^([0-9a-f]{64})  (.+)$') { Stop-Install "SHA256SUMS: '$line' is not '<sha256>  <name>'; nothing was changed" }
            $sums[$Matches[2]] = $Matches[1]
        }
        $members = @($names | Where-Object { $_ -cne 'SHA256SUMS' })
        $bad = Compare-Object -ReferenceObject $members -DifferenceObject @($sums.Keys) -CaseSensitive | Select-Object -First 1
        if ($bad) { Stop-Install "member '$($bad.InputObject)' is not both in the archive and in SHA256SUMS; nothing was changed" }
        foreach ($name in $members) {
            $got = Get-Sha256 (Join-Path $stage ($name -replace '/', '\'))
            if ($got -ne $sums[$name]) {
                Stop-Install ("bundle member $name does not match its sha256 in SHA256SUMS; nothing was changed`n" +
                    "  want: $($sums[$name])`n  got:  $got`n" +
                    'copy the bundle again (compare its sha256 with the FILE.sha256 written where it was built)')
            }
        }
        $index = Get-Content -LiteralPath (Join-Path $stage 'BUNDLE.json') -Raw -Encoding UTF8 | ConvertFrom-Json
        if ("$($index.format)" -ne '1') { Stop-Install "BUNDLE.json format $($index.format) is not 1: install it with the install.ps1 inside it" }
        if ("$($index.platform)" -ne $script:Platform) {
            Stop-Install "the bundle is for $($index.platform), this machine is $($script:Platform); nothing was changed"
        }
        Write-Say "every member matches SHA256SUMS (bundle id $($script:BundleId))"
        if ($script:Opt.DryRun -eq 1) {
            Write-Say "dry run: the bundle would be unpacked to $($script:BundleDir) and installed; nothing was changed"
            Undo-Bundle
            return
        }
        Move-Item -LiteralPath $stage -Destination $script:BundleDir
        $script:BundleUndo = ''
    } catch {
        Undo-Bundle
        throw
    }
}

# pip for the offline install: the bundle's wheels only, no index, and no configuration of this machine.
function Set-PipIsolation([string]$Wheels) {
    Get-ChildItem Env: | Where-Object { $_.Name -like 'PIP_*' } | ForEach-Object {
        Remove-Item -LiteralPath "Env:$($_.Name)" -ErrorAction SilentlyContinue
    }
    $env:PIP_CONFIG_FILE = 'nul'
    $env:PIP_NO_INDEX = '1'
    $env:PIP_FIND_LINKS = $Wheels
    $env:PIP_DISABLE_PIP_VERSION_CHECK = '1'
}

function Install-BundleMiniforge([string]$Installer) {
    $o = $script:Opt
    if ((Split-Path -Leaf $Installer) -ne $script:MiniforgeFile) {
        Stop-Install "the bundle's $(Split-Path -Leaf $Installer) is not the pinned $($script:MiniforgeFile)"
    }
    $got = Get-Sha256 $Installer
    if ($got -ne $script:MiniforgeSha256) {
        Stop-Install "checksum mismatch for the bundle's $($script:MiniforgeFile)`n  want: $($script:MiniforgeSha256)`n  got:  $got"
    }
    if ((Test-Path -LiteralPath $o.CondaPrefix) -and (Get-ChildItem -LiteralPath $o.CondaPrefix -Force | Select-Object -First 1)) {
        Stop-Install "$($o.CondaPrefix) exists but holds no conda; remove it or choose another -CondaPrefix"
    }
    Write-Say "no conda found: installing Miniforge3 $MiniforgeVersion from the bundle into $($o.CondaPrefix)"
    # /D= must come last and unquoted (NSIS).
    $proc = Start-Process -FilePath $Installer -Wait -PassThru -ArgumentList @(
        '/S', '/InstallationType=JustMe', '/RegisterPython=0', '/AddToPath=0', "/D=$($o.CondaPrefix)")
    if ($proc.ExitCode -ne 0) { Stop-Install "the Miniforge installer failed (exit $($proc.ExitCode))" }
    $script:CondaBin = Join-Path $o.CondaPrefix 'Scripts\conda.exe'
    $script:CondaFoundVia = 'installed from the bundle'
    Resolve-EnvPrefix  # ask the new conda where the env goes, as after a downloaded Miniforge
    Write-Say "the env goes to $($script:EnvPrefix) ($($script:EnvWhy))"
}

# The environment: conda from the bundle's packages (offline) when it has them and a conda is found or its
# Miniforge installed; otherwise the venv fallback, loudly, exactly as -Demo does.
function New-BundleEnv {
    $miniforge = Get-BundleField $script:BundleIndex 'miniforge'
    if ((Get-BundleField $script:BundleIndex 'conda') -eq 'included') {
        Find-Conda
        if (-not $script:CondaBin -and $miniforge) { Install-BundleMiniforge (Join-Path $script:BundleDir $miniforge) }
        if ($script:CondaBin) {
            $script:ProfileName = 'bundle'
            $packages = Join-Path $script:BundleDir (Get-BundleField $script:BundleIndex 'conda_packages')
            $script:CondaMirror = 'file:///' + ($packages -replace '\\', '/')
            $env:CONDA_OFFLINE = 'true'
            New-CondaEnv
            return
        }
        Write-Warn 'the bundle has conda packages, but no conda was found and the bundle has no Miniforge installer'
    } else {
        Write-Warn "the bundle has no conda layer: $(Get-BundleField $script:BundleIndex 'conda_reason')"
    }
    $script:FallbackPython = Get-BundleField $script:BundleIndex 'python'
    $script:FallbackLock = $script:PipLock
    New-VenvFallback
}

# -FromBundle: verify, unpack, then install with no network at all and hand off to `run` on the bundle's
# manifest (source from the git bundle, weights through a dir source checked against the lock, smoke test).
function Install-FromBundle {
    $o = $script:Opt
    Get-Platform
    Test-Bundle $o.FromBundle
    if ($o.DryRun -eq 1) { return }
    $index = $script:BundleIndex
    $script:RootDir = $script:BundleDir
    $o.Manifest = Join-Path $script:BundleDir (Get-BundleField $index 'manifest')
    Start-Receipt  # the receipt sits in the bundle manifest's state folder: uninstall reads it there
    Start-Log
    Add-LogToReceipt
    $o.Model = Get-BundleField $index 'model'
    $o.Profile = 'bundle'
    $o.Demo = 0
    $script:CondaLock = Join-Path $script:BundleDir (Get-BundleField $index 'conda_lock')
    $script:PipLock = Join-Path $script:BundleDir ((Get-BundleField $index 'pip_lock') -replace '/', '\')
    Set-PipIsolation (Join-Path $script:BundleDir ((Get-BundleField $index 'wheels') -replace '/', '\'))
    # The bundle's weights, whatever this shell says (the bundle profile lists them as a dir source).
    Remove-Item -LiteralPath 'Env:LLAMA_BOOTSTRAP_SOURCES' -ErrorAction SilentlyContinue
    $stamp = Join-Path $script:BundleDir '.llama-bootstrap-installed'
    $script:EnvPython = ''
    if (Test-Path -LiteralPath $stamp) {
        foreach ($line in Get-Content -LiteralPath $stamp -Encoding UTF8) {
            if ($line -match '^env_prefix=(.*)$') { $script:EnvPrefix = $Matches[1] }
            if ($line -match '^env_python=(.*)$') { $script:EnvPython = $Matches[1] }
        }
    }
    if ($script:EnvPython -and (Test-Path -LiteralPath $script:EnvPython -PathType Leaf)) {
        Write-Say "bundle $($script:BundleId.Substring(0, 16)) is installed in $($script:EnvPrefix): nothing to install"
        Invoke-HandOff
        return
    }
    New-BundleEnv
    Install-PipLayer
    Install-Bootstrapper
    Add-Leftovers
    Invoke-HandOff
    Set-Content -LiteralPath $stamp -Value @("env_prefix=$($script:EnvPrefix)", "env_python=$($script:EnvPython)") -Encoding UTF8
}

function Invoke-Main {
    if ($PSVersionTable.PSVersion.Major -lt 5) {
        Stop-Install "PowerShell 5.1 or later is needed (this is $($PSVersionTable.PSVersion)); install Windows Management Framework 5.1"
    }
    # TLS 1.2 for every download (PowerShell 5.1 defaults to TLS 1.0 on older Windows).
    [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
    if ($Help) { Show-Usage; return }
    # Before anything reads Windows-only variables (PowerShell 7 runs this on Linux and macOS too).
    if (-not (Test-IsWindows)) { Stop-Install 'install.ps1 is for Windows; on Linux run install.sh' }
    Read-Options
    if ($script:Opt.FromBundle) {
        Install-FromBundle
        return
    }
    if ($script:Opt.Uninstall -eq 1) {
        Invoke-Uninstall
        return
    }
    Get-Platform
    Select-Locks
    Find-Conda
    if ($script:Opt.Rollback -eq 1) {
        Invoke-Rollback
        return
    }
    Test-Prerequisites
    if ($script:Opt.DryRun -ne 1) {
        Start-Receipt
        Start-Log
        Add-LogToReceipt
    }
    Write-Plan
    if ($script:Opt.DryRun -eq 1) {
        return
    }
    if (-not $script:CondaBin) {
        if (-not (Install-Miniforge)) {
            if ($script:Opt.Demo -eq 1) {
                New-VenvFallback
            } else {
                Stop-Install ("no conda found and Miniforge could not be downloaded from $($script:MiniforgeBaseUrl);`n" +
                    'check the network or proxy, try -Profile cn, or set LLAMA_BOOTSTRAP_MINIFORGE_URL to a mirror of the same file')
            }
        }
    }
    Add-FoundConda
    if (-not $script:VenvDir) {
        New-CondaEnv
    }
    Install-PipLayer
    Set-PipStamp
    Install-Bootstrapper
    Add-Leftovers
    Test-NewEnv
    if ($script:Opt.InstallOnly -eq 1) {
        Complete-Update
        Write-Say "installed (-InstallOnly); the env's python is on stdout; log: $($script:LogFile)"
        Write-Output $script:EnvPython
        return
    }
    Add-DemoWorkdir
    Invoke-HandOff
    Complete-Update
}

# Dot-sourced (tests/installers/ps1/functions.ps1): define the functions, run nothing.
if ($MyInvocation.InvocationName -eq '.') { return }

$script:ExitCode = 0
try {
    Invoke-Main
} catch {
    $script:ExitCode = 1
    if ($_.Exception.Data.Contains('llama-bootstrap-exit')) { $script:ExitCode = [int]$_.Exception.Data['llama-bootstrap-exit'] }
    Write-Stderr 'error:' $_.Exception.Message ([System.ConsoleColor]::Red)
    Write-LogLine "error: $($_.Exception.Message)"
    if ($script:LogFile) { [Console]::Error.WriteLine("the full log is in: $($script:LogFile)") }
} finally {
    # Runs on Ctrl-C too (then neither the rest of try nor catch does): no temporary folder is left.
    Remove-TempDir
}
exit $script:ExitCode
