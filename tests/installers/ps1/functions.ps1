# install.ps1's functions, run for real by PowerShell: CI runs this under PowerShell 7 on ubuntu
# (provision.yml, job ps1-on-linux) and under Windows PowerShell 5.1 (job windows). Nothing here
# needs Pester: each check prints "ok"/"FAIL" and the script exits 1 if any failed.
#   pwsh -NoProfile -File tests/installers/ps1/functions.ps1
# On Linux/macOS it also drives Resolve-EnvPrefix against the STAND-IN conda
# (tests/installers/fixtures/standin-conda, a Python script: it places envs like real conda and
# answers `info --json` in conda's and micromamba's shapes).
$ErrorActionPreference = 'Stop'
$here = $PSScriptRoot
$fixtures = Join-Path (Split-Path -Parent $here) 'fixtures'
$repo = Split-Path -Parent (Split-Path -Parent $here)
. (Join-Path $repo 'install.ps1')

$script:Failures = 0
function Assert-Equal($Name, $Want, $Got) {
    if ("$Want" -ceq "$Got") {
        Write-Output "ok    $Name"
    } else {
        Write-Output "FAIL  $Name`n      want: '$Want'`n      got:  '$Got'"
        $script:Failures++
    }
}

function Get-StopCode([scriptblock]$Block) {
    try { & $Block; return 'no error' } catch { return "$($_.Exception.Data['llama-bootstrap-exit'])" }
}

# ---- the manifest is read by the same rules as install.sh's manifest_value ------------------------
$yaml = Join-Path $fixtures 'manifest-values.yaml'
$expected = Get-Content -LiteralPath (Join-Path $fixtures 'manifest-values.json') -Raw | ConvertFrom-Json
foreach ($property in $expected.PSObject.Properties) {
    Assert-Equal "manifest value $($property.Name)" $property.Value (Read-ManifestValue $yaml $property.Name)
}

# ---- a prefix Miniforge's silent installer would refuse ---------------------------------------------
Assert-Equal 'prefix with a space' 'it contains a space' (Get-MiniforgePrefixProblem 'C:\Users\Jane Doe\miniforge3' '' $false)
Assert-Equal 'prefix with (' "it contains '(' (the installer refuses ^ % ! = , ( ))" (Get-MiniforgePrefixProblem 'C:\tools(x)\mf' '' $false)
Assert-Equal 'prefix with %' "it contains '%' (the installer refuses ^ % ! = , ( ))" (Get-MiniforgePrefixProblem 'C:\100%\mf' '' $false)
Assert-Equal 'prefix with =' "it contains '=' (the installer refuses ^ % ! = , ( ))" (Get-MiniforgePrefixProblem 'C:\a=b\mf' '' $false)
$long = 'C:\Users\janedoe\AppData\Local\Programs\tools\miniforge3'
Assert-Equal 'long prefix, long paths off, no admin' $true ((Get-MiniforgePrefixProblem $long '0' $false) -like '*longer than 46*')
Assert-Equal 'long prefix, long paths on' '' (Get-MiniforgePrefixProblem $long '1' $false)
Assert-Equal 'long prefix, administrator' '' (Get-MiniforgePrefixProblem $long '0' $true)
Assert-Equal 'long prefix, no LongPathsEnabled value' '' (Get-MiniforgePrefixProblem $long '' $false)
Assert-Equal 'plain prefix' '' (Get-MiniforgePrefixProblem 'C:\miniforge3' '0' $false)

# ---- exit codes -------------------------------------------------------------------------------------
Assert-Equal 'bool yes' 1 (ConvertTo-Bool 'X' 'YES')
Assert-Equal 'bool empty' 0 (ConvertTo-Bool 'X' '')
Assert-Equal 'bad bool is bad input (2)' '2' (Get-StopCode { ConvertTo-Bool 'LLAMA_BOOTSTRAP_YES' 'perhaps' })
Assert-Equal 'a plain stop is 1' '1' (Get-StopCode { Stop-Install 'x' })
Assert-Equal 'http to a real host is bad input (2)' '2' (Get-StopCode { Test-DownloadUrl 'http://example.invalid/x' })
Assert-Equal 'Ctrl-C status is interrupted' $true (Test-Interrupted -1073741510)

# ---- conda.bat is never called: the conda.exe it wraps is ------------------------------------------
$tmp = Join-Path ([System.IO.Path]::GetTempPath()) ('llama-bootstrap-ps1-' + [System.Guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path (Join-Path $tmp 'condabin'), (Join-Path $tmp 'Scripts') | Out-Null
try {
    $bat = Join-Path (Join-Path $tmp 'condabin') 'conda.bat'
    Set-Content -LiteralPath $bat -Value '@echo off'
    Assert-Equal 'conda.bat without conda.exe is refused' '1' (Get-StopCode { Resolve-CondaExe $bat })
    $exe = Join-Path (Join-Path $tmp 'Scripts') 'conda.exe'
    Set-Content -LiteralPath $exe -Value 'stand-in'
    Assert-Equal 'conda.bat resolves to Scripts\conda.exe' $exe (Resolve-CondaExe $bat)
    Assert-Equal 'conda.exe is kept' $exe (Resolve-CondaExe $exe)

    # ---- writability probe leaves nothing behind -----------------------------------------------------
    Assert-Equal 'writable temp dir' $true (Test-WritableDir (Join-Path (Join-Path $tmp 'new') 'deeper'))
    Assert-Equal 'probe left nothing' 2 (@(Get-ChildItem -LiteralPath $tmp -Force).Count)

    # ---- the env prefix: asked from (stand-in) conda, conda's rule applied ---------------------------
    if (-not (Test-IsWindows)) {
        $standin = Join-Path $tmp 'conda'
        Copy-Item -LiteralPath (Join-Path $fixtures 'standin-conda') -Destination $standin
        Copy-Item -LiteralPath (Join-Path $fixtures 'standin-python') -Destination (Join-Path $tmp 'standin-python')
        & chmod +x $standin
        $home2 = Join-Path $tmp 'home'
        New-Item -ItemType Directory -Path $home2 | Out-Null
        $env:HOME = $home2
        $env:STANDIN_LOG = Join-Path $tmp 'calls.log'
        $env:STANDIN_CONDA_BASE = Join-Path $tmp 'base'
        $script:CondaBin = $standin
        $script:Opt = @{ EnvName = 'myenv'; CondaPrefix = (Join-Path $tmp 'mf') }

        Resolve-EnvPrefix
        Assert-Equal 'env in the writable base' (Join-Path $env:STANDIN_CONDA_BASE 'envs/myenv') $script:EnvPrefix

        $env:STANDIN_BASE_READONLY = '1'
        Resolve-EnvPrefix
        Assert-Equal 'read-only base: ~/.conda/envs' (Join-Path $home2 '.conda/envs/myenv') $script:EnvPrefix
        Remove-Item Env:STANDIN_BASE_READONLY

        $team = Join-Path $tmp 'team-envs'
        $env:CONDA_ENVS_PATH = "/dev/null/shared:$team"
        foreach ($flavour in @('conda', 'micromamba')) {
            $env:STANDIN_FLAVOUR = $flavour
            Resolve-EnvPrefix
            Assert-Equal "envs_dirs honoured ($flavour)" (Join-Path $team 'myenv') $script:EnvPrefix
            Assert-Equal "unwritable dir named ($flavour)" "conda's first writable envs dir (not writable: /dev/null/shared)" $script:EnvWhy
        }
        Remove-Item Env:CONDA_ENVS_PATH
        Remove-Item Env:STANDIN_FLAVOUR

        $script:CondaBin = ''
        Resolve-EnvPrefix
        Assert-Equal 'no conda: inside the Miniforge to come' 'inside the Miniforge to be installed' $script:EnvWhy
    }
} finally {
    Remove-Item -LiteralPath $tmp -Recurse -Force -ErrorAction SilentlyContinue
}

if ($script:Failures) {
    Write-Output "$($script:Failures) check(s) failed"
    exit 1
}
Write-Output 'all checks passed'
exit 0
