#!/usr/bin/perl
# tools/cuemu_launch.pl : rewrite CUDA kernel launches for the CPU emulator (tests/cuemu):
#   name<<<grid, block, shmem, stream>>>(args)  ->  cuemu::Launch("name", grid, block, shmem, stream).go(name, args)
# Reads a .cu file on stdin, writes C++ on stdout; a #line keeps compiler messages pointing
# at the original file (given as the first argument).
use strict;
use warnings;
my $src = shift @ARGV // '-';
local $/;
my $text = <STDIN>;
my $n = 0;
$text =~ s{(\b[A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(\s*(\))?}{
    $n++;
    "cuemu::Launch(\"$1\", $2).go($1" . (defined $3 ? ")" : ", ")
}gse;
die "cuemu_launch.pl: $src: a '<<<' is left that is not a kernel launch this script understands\n" if $text =~ /<<</;
print "#line 1 \"$src\"\n", $text;
print STDERR "cuemu_launch.pl: $src: $n launches\n" if $ENV{CUEMU_VERBOSE};
