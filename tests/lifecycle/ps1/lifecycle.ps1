# install.ps1's receipt and env functions, run for real by PowerShell (7 on Linux, 5.1 and 7 on Windows):
#   pwsh -NoProfile -File tests/lifecycle/ps1/lifecycle.ps1
# Each check prints "ok"/"FAIL"; the script exits 1 if any failed. The ids of
# tests/lifecycle/fixtures/env-ids.json are checked against bootstrap/status.py by
# tests/lifecycle/test_installers_static.py, so the three implementations agree.
$ErrorActionPreference = 'Stop'
$here = $PSScriptRoot
$repo = Split-Path -Parent (Split-Path -Parent (Split-Path -Parent $here))
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

$tmp = Join-Path ([System.IO.Path]::GetTempPath()) ('llama-bootstrap-life-' + [System.Guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $tmp | Out-Null
try {
    # ---- the receipt: the first record of a path wins; the layout is bootstrap/receipt.py's ----------
    $script:Receipt = Join-Path (Join-Path $tmp 'state') 'receipt.json'
    $odd = Join-Path $tmp ('with "quotes" and ' + [char]0x00FC + [char]0x4E2D)  # ASCII source: 5.1 reads it as ANSI
    Add-ReceiptEntry $odd 'folder' 'created'
    Add-ReceiptEntry $odd 'env' 'found'
    Add-ReceiptEntry (Join-Path $tmp 'b') 'log' 'found' @{ file_existed = $false }
    $lines = [System.IO.File]::ReadAllLines($script:Receipt)
    Assert-Equal 'receipt header' "{|  `"receipt`": 1,|  `"entries`": [" ($lines[0..2] -join '|')
    Assert-Equal 'receipt footer' '  ]|}' ($lines[-2..-1] -join '|')
    Assert-Equal 'one entry per line' 2 (@($lines | Where-Object { $_.StartsWith('    {') }).Count)
    Assert-Equal 'the first record wins' 'created' (Get-ReceiptStatus $odd)
    Assert-Equal 'extra fields are kept' 'False' "$((Read-ReceiptEntries)[1].file_existed)"
    Assert-Equal 'unknown path' '' (Get-ReceiptStatus (Join-Path $tmp 'never'))
    Assert-Equal 'paths by kind' (Join-Path $tmp 'b') ((Get-ReceiptPaths @('log')) -join '|')

    # ---- the topmost missing folder ---------------------------------------------------------------
    Assert-Equal 'first missing' (Join-Path $tmp 'x') (Get-FirstMissing (Join-Path (Join-Path $tmp 'x') 'y'))
    Assert-Equal 'nothing missing' '' (Get-FirstMissing $tmp)

    # ---- env ids: the same as install.sh's and bootstrap/status.py's --------------------------------
    $cases = Get-Content -LiteralPath (Join-Path (Split-Path -Parent $here) 'fixtures\env-ids.json') -Raw | ConvertFrom-Json
    foreach ($case in $cases) {
        $prefix = Join-Path $tmp ('env-' + $case.id)
        $script:EnvKind = 'venv'
        if ($case.conda) { $script:EnvKind = 'conda' }
        $meta = Get-MetaDir $prefix
        New-Item -ItemType Directory -Force -Path $meta | Out-Null
        if ($case.conda) { Set-Content -LiteralPath (Join-Path $meta $StampConda) -Value "$($case.conda)  x.lock" -Encoding ASCII }
        Set-Content -LiteralPath (Join-Path $meta $StampPip) -Value "$($case.pip)  y.txt" -Encoding ASCII
        Assert-Equal "env id ($($script:EnvKind))" $case.id (Get-EnvId $prefix)
    }

    # ---- a tree is removed without following the links in it --------------------------------------
    $outside = Join-Path $tmp 'outside'
    New-Item -ItemType Directory -Path $outside | Out-Null
    Set-Content -LiteralPath (Join-Path $outside 'precious.txt') -Value 'not ours'
    $doomed = Join-Path $tmp 'doomed'
    New-Item -ItemType Directory -Path (Join-Path $doomed 'sub') | Out-Null
    Set-Content -LiteralPath (Join-Path $doomed 'sub\f.txt') -Value 'ours'
    $linked = $true
    try {
        if (Test-IsWindows) { New-Item -ItemType Junction -Path (Join-Path $doomed 'link') -Target $outside | Out-Null }
        else { New-Item -ItemType SymbolicLink -Path (Join-Path $doomed 'link') -Target $outside | Out-Null }
    } catch { $linked = $false }
    Remove-Tree $doomed
    Assert-Equal 'tree removed' $false (Test-Path -LiteralPath $doomed)
    Assert-Equal 'link target kept' 'not ours' ((Get-Content -LiteralPath (Join-Path $outside 'precious.txt')) -join '')
    Assert-Equal 'a link could be made' $true $linked
} finally {
    if (Test-Path -LiteralPath $tmp) { Remove-Item -LiteralPath $tmp -Recurse -Force }
}
if ($script:Failures) { exit 1 }
